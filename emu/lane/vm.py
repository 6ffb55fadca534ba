"""The kernel lane: run any command (an `emu` command, a pytest selection) under a stock Debian kernel in a
throw-away QEMU VM, for the dataplane features the host's kernel lacks (IPVS, IPIP, GRE, netem, dummy, VLAN, VRF,
WireGuard, SCTP: Debian builds them all as modules).

`run()` boots it with software emulation only (`-accel tcg`; /dev/kvm is never used): the kernel from
emu.lane.kernels, the initramfs from emu.lane.initramfs, the command in the script of emu.lane.guest.  /init mounts
the host's `/` read-only over 9p, puts a tmpfs overlay over it (so /run, /tmp, /var are writable), mounts the project
directory read-write at the same path (a second 9p share, so the project's virtualenv works as it is), binds the
stock kernel's modules over /lib/modules/VERSION so modprobe and module auto-loading work, and `switch_root`s.
The command runs as root with the project directory as its working directory; its output is streamed live and
its exit status comes back through a third, per-run 9p share (QEMU itself always exits 0).

The guest has no network device: nothing it does can reach the host's network, and the host's root network
namespace is never touched.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from emu.lane.bootimage import boot_image
from emu.lane.guest import ConsoleRelay, boot_env, command_line, guest_env, guest_script
from emu.lane.host import QEMU, LaneError, cache_dir, ensure_tools, log
from emu.lane.initramfs import build_initramfs
from emu.lane.kernels import DEFAULT_SPEC, KernelImage, ensure_kernel

DEFAULT_TIMEOUT = 1800.0
DEFAULT_MEM = "4G"
DEFAULT_CPUS = 2

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_LANE_FAILED = 125  # the guest never reported the command's status (as `docker run` for its own failures)


def project_dir() -> Path:
    """The directory shared read-write with the guest: this checkout (the one holding emu/ and pyproject.toml),
    else the current directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd().resolve()


def qemu_argv(image: Path, initramfs: Path, run_dir: Path, project: Path, mem: str, cpus: int,
              qemu: str = QEMU) -> list[str]:
    """The QEMU command line: TCG only (never KVM), no network, a serial console on stdio, three 9p shares.
    IMAGE is boot_image()'s: a PVH vmlinux or a bzImage."""
    append = "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off random.trust_cpu=on rdinit=/init"

    def share(tag: str, path: Path, readonly: bool) -> list[str]:
        ro = ",readonly=on" if readonly else ""
        return ["-fsdev", f"local,id={tag},path={path},security_model=none,multidevs=remap{ro}",
                "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]

    return [qemu, "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(cpus), "-m", mem,
            "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none", "-no-reboot",
            "-serial", "stdio", "-device", "virtio-rng-pci",
            "-kernel", str(image), "-initrd", str(initramfs), "-append", append,
            *share("hostroot", Path("/"), True), *share("project", project, False), *share("lane", run_dir, False)]


def _pdeathsig() -> None:
    """In the QEMU child: die with SIGKILL if the process that started it dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _clean_stale_runs(runs: Path) -> None:
    """Remove per-run directories left by lane runs whose process is gone (killed with SIGKILL)."""
    if not runs.is_dir():
        return
    for d in runs.iterdir():
        m = re.match(r"run-(\d+)-", d.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt for the block (so cleanup runs), as Ctrl-C does."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {}
    try:
        for s in (signal.SIGTERM, signal.SIGHUP):
            old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def run(cmd: Sequence[str], kernel: KernelImage | str = DEFAULT_SPEC, mem: str = DEFAULT_MEM, cpus: int = DEFAULT_CPUS,
        timeout: float | None = DEFAULT_TIMEOUT, env: Mapping[str, str] | None = None,
        project: str | os.PathLike[str] | None = None, cwd: str | os.PathLike[str] | None = None,
        out: Any = None, timings: dict[str, float] | None = None) -> int:
    """Boot KERNEL (a KernelImage or a spec for ensure_kernel) in a throw-away VM and run CMD there as root.

    CMD runs in CWD (default: the current directory if inside PROJECT, else PROJECT; PROJECT defaults to
    project_dir()), with the host's / read-only underneath a tmpfs overlay and PROJECT shared read-write. Its
    console output is streamed to OUT (default stdout) as it comes. TIMINGS, if given, receives "boot" (QEMU start
    to the command's start), "command" (from then to the VM's exit) and "total" seconds.

    Returns CMD's exit status; 124 if TIMEOUT seconds passed (the VM is killed), 125 if the guest never reported a
    status (boot failure, kernel panic). QEMU and the per-run directory are always removed, also on Ctrl-C, SIGTERM
    and SIGHUP.
    """
    if not cmd:
        raise LaneError("no command to run")
    if os.environ.get("EMU_KERNEL_LANE") == "1":
        raise LaneError("already inside the kernel lane (it does not nest): run the command directly")
    ensure_tools()
    k = kernel if isinstance(kernel, KernelImage) else ensure_kernel(kernel)
    initrd = build_initramfs(k)
    image = boot_image(k)
    proj = Path(project).resolve() if project else project_dir()
    here = Path(cwd).resolve() if cwd else Path.cwd().resolve()
    if here != proj and proj not in here.parents:
        here = proj
    sink = out if out is not None else sys.stdout.buffer
    runs = cache_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    _clean_stale_runs(runs)
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=runs))
    proc: subprocess.Popen[bytes] | None = None
    try:
        (run_dir / "boot.env").write_text(boot_env(str(proj), str(k.modules.resolve()), k.version))
        (run_dir / "guest.sh").write_text(guest_script(cmd, str(here), guest_env(proj, env)))
        argv = qemu_argv(image, initrd, run_dir, proj, mem, cpus)
        t0 = time.monotonic()
        started: dict[str, float] = {}

        def on_start() -> None:
            started["t"] = time.monotonic()
            log(f"Linux {k.version} booted in {started['t'] - t0:.1f}s; running: {command_line(cmd)}")

        relay = ConsoleRelay(on_start)
        with _signals_raise():
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    preexec_fn=_pdeathsig, start_new_session=True)
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            deadline = None if timeout is None else t0 + timeout
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([fd], [], [], wait)
                if not ready:
                    _stop(proc)
                    log(f"timed out after {timeout:g}s: the VM was killed")
                    return EXIT_TIMEOUT
                data = os.read(fd, 65536)
                if not data:
                    break
                _write(sink, relay.feed(data))
            _write(sink, relay.flush())
            proc.wait()
        status = run_dir / "status"
        if not status.is_file():
            log("the guest stopped without reporting the command's exit status (see the console output above)")
            return EXIT_LANE_FAILED
        rc = int(status.read_text().strip() or EXIT_LANE_FAILED)
        end = time.monotonic()
        if "t" in started:
            if timings is not None:
                timings.update(boot=started["t"] - t0, command=end - started["t"], total=end - t0)
            log(f"exit status {rc}; command and power-off {end - started['t']:.1f}s, total {end - t0:.1f}s")
        return rc
    finally:
        if proc is not None:
            _stop(proc)
            if proc.stdout:
                proc.stdout.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _write(sink: Any, data: bytes) -> None:
    if data:
        sink.write(data)
        sink.flush()
