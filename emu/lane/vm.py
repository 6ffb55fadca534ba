"""The kernel lane: run any command (an `emu` command, a pytest selection) under a stock Debian kernel in a
throw-away QEMU VM, for the dataplane features the host's kernel lacks (IPVS, IPIP, GRE, netem, dummy, VLAN, VRF,
WireGuard, SCTP: Debian builds them all as modules).

How it works:

- `ensure_kernel()` fetches the versioned package `linux-image-amd64` depends on with `apt-get download`, unpacks it
  with `dpkg-deb -x` into a cache directory and runs `depmod` on it (the .deb ships no modules.dep).
- `build_initramfs()` writes a small cpio archive: busybox (from `busybox-static`), the virtio/9p/overlay modules
  with their dependencies (resolved from modules.dep), and an `/init` script. It is cached by content.
- `run()` boots it with software emulation only (`-accel tcg`; /dev/kvm is never used). `/init` mounts the host's
  `/` read-only over 9p, puts a tmpfs overlay over it (so /run, /tmp, /var are writable), mounts the project
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
import dataclasses
import hashlib
import json
import lzma
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from emu.errors import EmuError

DEFAULT_SPEC = "debian-stable"
META_PACKAGE = "linux-image-amd64"  # Debian's "current stable kernel" package: it depends on the versioned one
CACHE_ENV = "EMU_KERNEL_CACHE"
DEFAULT_TIMEOUT = 1800.0
DEFAULT_MEM = "4G"
DEFAULT_CPUS = 2

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_LANE_FAILED = 125  # the guest never reported the command's status (as `docker run` for its own failures)

# Debian package -> a file it installs that the lane uses.
TOOLS = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": "/bin/busybox",
    "kmod": "/usr/sbin/depmod",
}
QEMU = TOOLS["qemu-system-x86"]
BUSYBOX = TOOLS["busybox-static"]

# What /init loads, in this order (each after its dependencies from modules.dep); built-in ones are skipped.
INITRAMFS_MODULES = ("virtio_pci", "virtio_rng", "9pnet_virtio", "9p", "overlay")

# emu.apply.kernel.features() name -> the kernel config option that provides it (=y or =m means the kernel has it).
FEATURE_CONFIG = {
    "vxlan": "CONFIG_VXLAN",
    "bridge": "CONFIG_BRIDGE",
    "macvlan": "CONFIG_MACVLAN",
    "dummy": "CONFIG_DUMMY",
    "ipip": "CONFIG_NET_IPIP",
    "gre": "CONFIG_NET_IPGRE",
    "vlan": "CONFIG_VLAN_8021Q",
    "vrf": "CONFIG_NET_VRF",
    "wireguard": "CONFIG_WIREGUARD",
    "ifb": "CONFIG_IFB",
    "ip_vs": "CONFIG_IP_VS",
    "sctp": "CONFIG_IP_SCTP",
    "netem": "CONFIG_NET_SCH_NETEM",
    "nftables": "CONFIG_NF_TABLES",
    "br_netfilter": "CONFIG_BRIDGE_NETFILTER",
}

# Host environment variables a command in the lane sees as well (besides PATH, HOME, TERM, LANG, COLUMNS).
PASS_ENV = re.compile(r"^(EMU_.*|PYTEST_ADDOPTS|CI|NO_COLOR|FORCE_COLOR|PYTHONHASHSEED|PYTHONDONTWRITEBYTECODE)$")

# Loaded before the command, as on a Kubernetes node (kubeadm's preflight wants br_netfilter; the bridge module
# alone does not load it).
PRELOAD = ("br_netfilter",)

START_MARKER = "@@emu-kernel-lane: command starts@@"
LANE_MOUNT = "/run/emu-lane"  # where the per-run share is mounted inside the guest

CACHE_STAMP = ".emu-kernel-ready"
KEEP_KERNELS = 2  # downloaded kernels kept in the cache (the newest; older ones are removed after a download)


class LaneError(EmuError):
    """The lane could not be set up (a tool, a download, a kernel given by path)."""


@dataclasses.dataclass(frozen=True)
class KernelImage:
    """An unpacked kernel: its version (`uname -r` inside), vmlinuz, modules dir (with modules.dep) and config."""

    version: str
    vmlinuz: Path
    modules: Path  # .../lib/modules/VERSION
    config: Path | None  # the kernel's build config (boot/config-VERSION), if known
    source: str  # the Debian package it came from, or "path"

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "vmlinuz": str(self.vmlinuz), "modules": str(self.modules),
                "config": str(self.config) if self.config else None, "source": self.source}


# --- cache and tools ------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """`$EMU_KERNEL_CACHE`, else ~/.cache/emu/kernel-lane/."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emu" / "kernel-lane"


def _log(msg: str) -> None:
    print(f"kernel-lane: {msg}", file=sys.stderr, flush=True)


def missing_tools() -> list[str]:
    """The Debian packages of TOOLS whose file is not there."""
    return [pkg for pkg, path in TOOLS.items() if not os.path.exists(path)]


def ensure_tools() -> None:
    """Install qemu-system-x86, busybox-static and kmod with apt-get if any is missing (idempotent)."""
    missing = missing_tools()
    if not missing:
        return
    if os.geteuid() != 0:
        raise LaneError(f"the kernel lane needs {' '.join(missing)}: install them as root "
                        f"(apt-get install -y {' '.join(missing)})")
    _log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
                  *missing]):
        r = subprocess.run(argv, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise LaneError(f"{' '.join(argv[:2])} failed ({r.returncode}): {_last_line(r.stderr or r.stdout)}")
    still = missing_tools()
    if still:
        raise LaneError(f"apt-get install finished but {' '.join(still)} is still missing")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _check_output(argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd)
    except FileNotFoundError:
        raise LaneError(f"{what}: {argv[0]} not found") from None
    if r.returncode != 0:
        raise LaneError(f"{what}: {' '.join(argv)} failed ({r.returncode}): {_last_line(r.stderr or r.stdout)}")
    return r.stdout


# --- the kernel -----------------------------------------------------------------------------------------------------


def parse_apt_depends(text: str, prefix: str = "linux-image-") -> str | None:
    """The versioned kernel package in `apt-cache depends linux-image-amd64` output."""
    for line in text.splitlines():
        m = re.match(r"\s*\|?(?:Pre)?Depends:\s*(\S+)", line)
        if m and m.group(1).startswith(prefix):
            return m.group(1)
    return None


def parse_apt_candidate(text: str) -> str | None:
    """The `Candidate:` version in `apt-cache policy PKG` output (None if there is none)."""
    m = re.search(r"^\s*Candidate:\s*(\S+)", text, re.M)
    return m.group(1) if m and m.group(1) != "(none)" else None


def _apt_kernel_package(spec: str) -> tuple[str, str] | None:
    """(package, version) apt would download for SPEC, or None if apt does not know it (no lists yet)."""
    pkg = spec
    if spec == DEFAULT_SPEC:
        out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True).stdout
        pkg = parse_apt_depends(out) or ""
        if not pkg:
            return None
    ver = parse_apt_candidate(subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout)
    return (pkg, ver) if ver else None


def _cached_kernels() -> list[Path]:
    """Ready kernel directories in the cache, newest first."""
    d = cache_dir()
    if not d.is_dir():
        return []
    ready = [p for p in d.iterdir() if (p / CACHE_STAMP).is_file()]
    return sorted(ready, key=lambda p: (p / CACHE_STAMP).stat().st_mtime, reverse=True)


def _kernel_in(root: Path, source: str) -> KernelImage:
    """The kernel unpacked under ROOT (boot/vmlinuz-V, lib/modules/V)."""
    mods = sorted(p for p in (root / "lib" / "modules").iterdir() if p.is_dir()) if (root / "lib/modules").is_dir() \
        else []
    if len(mods) != 1:
        raise LaneError(f"{root}: expected one lib/modules/VERSION directory, found {len(mods)}")
    version = mods[0].name
    cfg = root / "boot" / f"config-{version}"
    return KernelImage(version, root / "boot" / f"vmlinuz-{version}", mods[0], cfg if cfg.is_file() else None,
                       source)


def _download_kernel(pkg: str, ver: str, dest: Path) -> None:
    """apt-get download PKG=VER, unpack it and run depmod, into DEST (atomically: a temp dir renamed at the end)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        t0 = time.monotonic()
        _log(f"downloading {pkg} {ver} with apt-get")
        # APT::Sandbox::User=root: the _apt user could not write to a root-owned cache directory.
        _check_output(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{pkg}={ver}"],
                      f"downloading {pkg}", cwd=tmp)
        debs = list(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise LaneError(f"apt-get download {pkg} left {len(debs)} .deb files")
        root = tmp / "root"
        _check_output(["dpkg-deb", "-x", str(debs[0]), str(root)], f"unpacking {debs[0].name}")
        debs[0].unlink()
        k = _kernel_in(root, pkg)
        _check_output(["depmod", "-b", str(root), k.version], f"depmod {k.version}")
        (tmp / CACHE_STAMP).write_text(json.dumps({"package": pkg, "version": ver, "kernel": k.version}) + "\n")
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / CACHE_STAMP).is_file():  # a concurrent run that won the race is fine
                raise
        _log(f"kernel {k.version} ready in {time.monotonic() - t0:.1f}s ({dest})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune_cache()


def prune_cache(keep: int = KEEP_KERNELS) -> list[Path]:
    """Remove downloaded kernels beyond the KEEP newest (~450 MB each), with their boot images and initramfs
    files; returns what was removed."""
    removed = []
    for d in _cached_kernels()[keep:]:
        version = json.loads((d / CACHE_STAMP).read_text()).get("kernel", "")
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        for sub in ("vmlinux", "initramfs") if version else ():
            for f in (cache_dir() / sub).glob(f"{version}-*"):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def _from_cache_dir(d: Path) -> KernelImage:
    meta = json.loads((d / CACHE_STAMP).read_text())
    return _kernel_in(d / "root", meta["package"])


def is_path_spec(spec: str) -> bool:
    """Whether a --kernel SPEC is a vmlinuz path (anything but debian-stable or a linux-image-* package name)."""
    return os.path.sep in spec or not (spec == DEFAULT_SPEC or spec.startswith("linux-image-"))


def ensure_kernel(spec: str = DEFAULT_SPEC, modules: str | os.PathLike[str] | None = None) -> KernelImage:
    """The kernel SPEC names, downloaded, unpacked and depmod'ed into the cache on first use.

    SPEC is `debian-stable` (the package `linux-image-amd64` depends on), a versioned Debian package name
    (`linux-image-6.1.0-27-amd64`), or the PATH of a vmlinuz: its modules directory is MODULES, or found next to it
    (see `kernel_from_path`).
    """
    if is_path_spec(spec):
        return kernel_from_path(spec, modules)
    if shutil.which("apt-cache") is None:
        raise LaneError("the kernel lane downloads Debian's kernel with apt, which this machine does not have")
    found = _apt_kernel_package(spec)
    if found is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        found = _apt_kernel_package(spec)
    if found is None:
        cached = [d for d in _cached_kernels() if spec == DEFAULT_SPEC or d.name.startswith(spec + "_")]
        if cached:
            return _from_cache_dir(cached[0])
        raise LaneError(f"apt does not know {META_PACKAGE if spec == DEFAULT_SPEC else spec} "
                        f"(run apt-get update) and no kernel is cached in {cache_dir()}")
    pkg, ver = found
    dest = cache_dir() / f"{pkg}_{_safe(ver)}"
    if not (dest / CACHE_STAMP).is_file():
        _download_kernel(pkg, ver, dest)
    return _from_cache_dir(dest)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", s)


def kernel_from_path(vmlinuz: str | os.PathLike[str], modules: str | os.PathLike[str] | None = None) -> KernelImage:
    """A kernel given as the path of its vmlinuz.

    The modules directory (it must have modules.dep: run `depmod -b ROOT VERSION` if not) is MODULES, else
    `lib/modules/VERSION` beside or above the image (VERSION from a `vmlinuz-VERSION` file name, or the only one
    there), else `/lib/modules/VERSION`. The config is `config-VERSION` beside the image, if there.
    """
    img = Path(vmlinuz).expanduser().resolve()
    if not img.is_file():
        raise LaneError(f"{vmlinuz}: no such kernel image")
    version = img.name.split("-", 1)[1] if img.name.startswith("vmlinuz-") else None
    if modules is not None:
        mdir = Path(modules).expanduser().resolve()
    else:
        mdir = _find_modules(img, version)
    if mdir is None or not mdir.is_dir():
        raise LaneError(f"{img}: no modules directory found next to it (give it: --modules DIR)")
    if not (mdir / "modules.dep").is_file():
        raise LaneError(f"{mdir}: no modules.dep (run: depmod -b ROOT {mdir.name}, where ROOT holds lib/modules)")
    version = mdir.name
    cfg = img.parent / f"config-{version}"
    return KernelImage(version, img, mdir, cfg if cfg.is_file() else None, "path")


def _find_modules(img: Path, version: str | None) -> Path | None:
    for base in (img.parent, img.parent.parent):
        for lib in (base / "lib" / "modules", base / "usr" / "lib" / "modules"):
            if version and (lib / version).is_dir():
                return lib / version
            if not version and lib.is_dir():
                dirs = [d for d in lib.iterdir() if d.is_dir()]
                if len(dirs) == 1:
                    return dirs[0]
    if version and Path("/lib/modules", version).is_dir():
        return Path("/lib/modules", version)
    return None


# --- kernel config --------------------------------------------------------------------------------------------------


def parse_config(text: str) -> dict[str, str]:
    """A kernel .config as {option: value}; `# CONFIG_X is not set` becomes "n", quotes are removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip('"')
            continue
        m = re.match(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$", line)
        if m:
            out[m.group(1)] = "n"
    return out


def config_features(config: Mapping[str, str]) -> dict[str, bool]:
    """Which emu.apply.kernel feature names a kernel with this config has (option =y or =m)."""
    return {name: config.get(opt, "n") in ("y", "m") for name, opt in FEATURE_CONFIG.items()}


# --- module dependencies --------------------------------------------------------------------------------------------


def module_name(path: str) -> str:
    """`kernel/net/9p/9pnet_virtio.ko.xz` -> `9pnet_virtio` (dashes are underscores, as the kernel names them)."""
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep as {module path: [dependency paths]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = rest.split()
    return deps


def resolve_modules(wanted: Iterable[str], modules_dep: str, builtin: str = "") -> list[str]:
    """Module paths to load, each after its dependencies, for the module NAMES wanted.

    Names found in modules.builtin are skipped; a name in neither raises LaneError.
    """
    deps = parse_modules_dep(modules_dep)
    by_name = {module_name(p): p for p in deps}
    built_in = {module_name(ln.strip()) for ln in builtin.splitlines() if ln.strip()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in seen:
            return
        if path in chain:
            raise LaneError(f"module dependency cycle: {' -> '.join(chain + (path,))}")
        for d in deps.get(path, []):
            visit(d, chain + (path,))
        seen.add(path)
        order.append(path)

    for name in wanted:
        n = name.replace("-", "_")
        if n in by_name:
            visit(by_name[n], ())
        elif n not in built_in:
            raise LaneError(f"module {name} is neither in modules.dep nor built in")
    return order


# --- initramfs ------------------------------------------------------------------------------------------------------


def init_script(module_paths: Sequence[str], version: str) -> str:
    """The initramfs /init (busybox sh). MODULE_PATHS are relative to /lib/modules/VERSION in the initramfs.

    It reads the per-run settings (project directory, where the kernel's modules are on the host) from `boot.env`
    in the per-run share, so the same initramfs serves every run.
    """
    loads = "\n".join(f"load {shlex.quote(m)}" for m in module_paths)
    nine_p = "trans=virtio,version=9p2000.L,msize=262144"
    return f"""#!/bin/busybox sh
# /init of the emu kernel lane (generated by emu/lane/vm.py). Kernel {version}.
export PATH=/bin
/bin/busybox --install -s /bin

fail() {{
    echo "kernel-lane init: $*"
    poweroff -f
    sleep 30
}}
load() {{
    insmod "/lib/modules/{version}/$1" 2>/tmp/insmod.err || {{
        grep -q 'File exists' /tmp/insmod.err || fail "insmod $1: $(cat /tmp/insmod.err)"
    }}
}}

mkdir -p /proc /sys /dev /tmp /lane /lower /upper /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{loads}

mount -t 9p -o {nine_p},cache=none lane /lane || fail "cannot mount the per-run share"
. /lane/boot.env || fail "no boot.env in the per-run share"
mount -t 9p -o {nine_p},ro,cache=loose hostroot /lower || fail "cannot mount the host's root"
mount -t tmpfs -o mode=755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot \\
    || fail "cannot mount the overlay"
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mkdir -p /newroot{LANE_MOUNT} "/newroot$EMU_PROJECT" "/newroot/lib/modules/$EMU_KVER"
mount --move /lane /newroot{LANE_MOUNT}
mount -t 9p -o {nine_p},$EMU_PROJECT_CACHE project "/newroot$EMU_PROJECT" || fail "cannot mount $EMU_PROJECT"
mount --bind "/lower$EMU_MODULES" "/newroot/lib/modules/$EMU_KVER" || fail "cannot bind the kernel's modules"
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot /bin/sh {LANE_MOUNT}/guest.sh
"""


def boot_env(project: str, modules: str, version: str, project_cache: str = "cache=loose") -> str:
    """The per-run settings /init sources (shell assignments)."""
    vals = {"EMU_PROJECT": project, "EMU_MODULES": modules, "EMU_KVER": version, "EMU_PROJECT_CACHE": project_cache}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in vals.items())


def guest_script(cmd: Sequence[str], cwd: str, env: Mapping[str, str], preload: Sequence[str] = PRELOAD) -> str:
    """What runs as PID 1 after switch_root (the host's /bin/sh): finish the mounts, load PRELOAD modules, run CMD
    in CWD with ENV and stdin from /dev/null, write its exit status to the per-run share, power off."""
    if not cmd:
        raise ValueError("empty command")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    modprobe = f"modprobe -q -a {shlex.join(preload)}\n" if preload else ""
    status = f"{LANE_MOUNT}/status"
    return f"""# PID 1 of the emu kernel lane (generated by emu/lane/vm.py)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
ip link set lo up 2>/dev/null || /bin/busybox ip link set lo up
/bin/busybox hostname emu-kernel-lane
{modprobe}{exports}echo {shlex.quote(START_MARKER)}
(cd {shlex.quote(cwd)} && exec {command_line(cmd)}) </dev/null
rc=$?
echo "$rc" > {status}.tmp && mv {status}.tmp {status}
sync
echo 0 > /proc/sys/kernel/printk
/bin/busybox poweroff -f
echo o > /proc/sysrq-trigger
sleep 30
"""


def command_line(cmd: Sequence[str]) -> str:
    """CMD as one shell-quoted line (each argument reaches the command unchanged)."""
    return shlex.join(cmd)


def cpio_newc(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks. ENTRIES: (name, mode, data); mode includes the file
    type (stat.S_IFDIR | 0o755, ...). Character devices pass their (major, minor) as data b"MAJ:MIN"."""
    out = bytearray()
    ino = 1

    def pad(n: int) -> bytes:
        return b"\0" * ((4 - n % 4) % 4)

    def header(name: str, mode: int, size: int, rmaj: int = 0, rmin: int = 0, nlink: int = 1) -> bytes:
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(nb), 0]
        h = b"070701" + b"".join(b"%08X" % f for f in fields) + nb
        return h + pad(len(h))

    for name, mode, data in entries:
        if (mode & 0o170000) == 0o020000:  # character device
            maj, mn = (int(x) for x in data.decode().split(":"))
            out += header(name, mode, 0, maj, mn)
        else:
            nlink = 2 if (mode & 0o170000) == 0o040000 else 1
            out += header(name, mode, len(data), nlink=nlink) + data + pad(len(data))
        ino += 1
    ino = 0
    out += header("TRAILER!!!", 0, 0, nlink=1)
    return bytes(out)


def _module_bytes(path: Path) -> bytes:
    """A module file, decompressed (busybox insmod takes plain .ko files)."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    if path.name.endswith(".ko.gz"):
        import gzip
        return gzip.decompress(data)
    return data


def initramfs_entries(kernel: KernelImage, busybox: Path) -> list[tuple[str, int, bytes]]:
    """The initramfs's files: directories, /dev/console, busybox, /init and the modules /init loads."""
    builtin = kernel.modules / "modules.builtin"
    paths = resolve_modules(INITRAMFS_MODULES, (kernel.modules / "modules.dep").read_text(),
                            builtin.read_text() if builtin.is_file() else "")
    local = [re.sub(r"\.(xz|zst|gz)$", "", p) for p in paths]
    dirs = {"bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", f"lib/modules/{kernel.version}"}
    for p in local:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add(f"lib/modules/{kernel.version}/" + "/".join(parts[:i]))
    entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in sorted(dirs)]
    entries.append(("dev/console", 0o020600, b"5:1"))
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("init", 0o100755, init_script(local, kernel.version).encode()))
    for src, dst in zip(paths, local):
        entries.append((f"lib/modules/{kernel.version}/{dst}", 0o100644, _module_bytes(kernel.modules / src)))
    return entries


def build_initramfs(kernel: KernelImage, busybox: str | os.PathLike[str] = BUSYBOX) -> Path:
    """The lane's initramfs for KERNEL (an uncompressed newc cpio), built once and cached by content."""
    entries = initramfs_entries(kernel, Path(busybox))
    h = hashlib.sha256()
    for name, mode, data in entries:
        h.update(name.encode() + b"\0" + str(mode).encode() + b"\0" + hashlib.sha256(data).digest())
    out = cache_dir() / "initramfs" / f"{kernel.version}-{h.hexdigest()[:16]}.cpio"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(cpio_newc(entries))
    tmp.replace(out)
    return out


# --- the boot image: an uncompressed vmlinux booted through its PVH entry point ------------------------------------

XEN_ELFNOTE_PHYS32_ENTRY = 18  # the ELF note that marks a kernel QEMU can start directly (PVH), skipping firmware
COMPRESSED_MAGIC = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b\x08": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


def has_pvh_note(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF image has the Xen PHYS32_ENTRY note in a PT_NOTE segment."""
    if elf[:5] != b"\x7fELF\x02" or len(elf) < 64:
        return False
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize = int.from_bytes(elf[0x36:0x38], "little")
    phnum = int.from_bytes(elf[0x38:0x3A], "little")
    for i in range(phnum):
        ph = elf[phoff + i * phentsize: phoff + (i + 1) * phentsize]
        if len(ph) < 40 or int.from_bytes(ph[0:4], "little") != 4:  # PT_NOTE
            continue
        off, size = int.from_bytes(ph[8:16], "little"), int.from_bytes(ph[32:40], "little")
        pos, end = off, off + size
        while pos + 12 <= end:
            namesz, descsz, ntype = (int.from_bytes(elf[pos + 4 * j: pos + 4 * j + 4], "little") for j in range(3))
            name = elf[pos + 12: pos + 12 + namesz]
            if name.rstrip(b"\0") == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _decompress_at(data: bytes, off: int, kind: str) -> bytes | None:
    try:
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(data[off:])
        if kind == "gzip":
            import zlib
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[off:])
        if kind == "zstd" and shutil.which("zstd"):
            r = subprocess.run(["zstd", "-dcq"], input=data[off:], capture_output=True)
            return r.stdout or None
    except Exception:  # not a stream after all (the magic bytes occur by chance): the caller tries the next offset
        return None
    return None


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage (what scripts/extract-vmlinux does), or None if none is found."""
    for magic, kind in COMPRESSED_MAGIC.items():
        off = bzimage.find(magic)
        while off >= 0:
            out = _decompress_at(bzimage, off, kind)
            if out and out[:4] == b"\x7fELF":
                return out
            off = bzimage.find(magic, off + 1)
    return None


def boot_image(kernel: KernelImage) -> Path:
    """What QEMU's -kernel gets: the uncompressed vmlinux if it has a PVH entry (cached; the boot skips firmware
    and decompression, about 2.5 s less under TCG), else the vmlinuz itself."""
    st = kernel.vmlinuz.stat()
    key = hashlib.sha256(f"{kernel.vmlinuz.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    base = cache_dir() / "vmlinux" / f"{kernel.version}-{key}"
    elf_path, no_pvh = base.with_name(base.name + ".elf"), base.with_name(base.name + ".no-pvh")
    if elf_path.is_file():
        return elf_path
    if no_pvh.is_file():
        return kernel.vmlinuz
    elf = extract_vmlinux(kernel.vmlinuz.read_bytes())
    base.parent.mkdir(parents=True, exist_ok=True)
    if elf is None or not has_pvh_note(elf):
        no_pvh.write_text("no PVH-capable ELF kernel inside: QEMU boots the bzImage\n")
        return kernel.vmlinuz
    tmp = base.with_name(base.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(elf)
    tmp.replace(elf_path)
    return elf_path


# --- running --------------------------------------------------------------------------------------------------------


def project_dir() -> Path:
    """The directory shared read-write with the guest: this checkout (the one holding emu/ and pyproject.toml),
    else the current directory."""
    root = Path(__file__).resolve().parent.parent
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


def guest_env(project: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment in the guest: a root login's basics, this venv's bin first on PATH, the host's
    EMU_* and test settings (PASS_ENV), then EXTRA."""
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if sys.prefix != sys.base_prefix:  # running from a virtualenv: the same one inside
        path = f"{Path(sys.prefix) / 'bin'}:{path}"
    tty = sys.stdout.isatty()
    env = {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8",
           "TERM": (os.environ.get("TERM") or "dumb") if tty else "dumb",
           "COLUMNS": str(shutil.get_terminal_size((100, 24)).columns)}
    if not tty:  # the guest's stdout is always a tty (the serial console): no colour codes in a log file
        env["PY_COLORS"] = "0"
    env.update({k: v for k, v in os.environ.items() if PASS_ENV.match(k)})
    env.update(extra or {})
    env["EMU_KERNEL_LANE"] = "1"  # tests use it to tell they run inside the lane
    return env


class ConsoleRelay:
    """Turns the serial console's bytes into the command's output: CRLF -> LF, and the start marker line is
    swallowed (on_start is called instead). Complete lines and partial lines that cannot be the marker pass at
    once, so output is live."""

    def __init__(self, on_start: Callable[[], None] | None = None):
        self.on_start = on_start
        self.marker = START_MARKER.encode()
        self.pending = b""
        self.at_line_start = True

    def feed(self, data: bytes) -> bytes:
        buf = self.pending + data
        self.pending = b""
        out = bytearray()
        while buf:
            nl = buf.find(b"\n")
            if nl < 0:
                if self.at_line_start and self.marker.startswith(buf.rstrip(b"\r")):
                    self.pending = buf  # might become the marker line
                elif buf.endswith(b"\r"):
                    out += buf[:-1]
                    self.pending = b"\r"
                    self.at_line_start = False
                else:
                    out += buf
                    self.at_line_start = False
                break
            line, buf = buf[:nl], buf[nl + 1:]
            if line.endswith(b"\r"):
                line = line[:-1]
            if self.at_line_start and line == self.marker:
                if self.on_start:
                    self.on_start()
            else:
                out += line + b"\n"
            self.at_line_start = True
        return bytes(out)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return rest


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
            _log(f"Linux {k.version} booted in {started['t'] - t0:.1f}s; running: {command_line(cmd)}")

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
                    _log(f"timed out after {timeout:g}s: the VM was killed")
                    return EXIT_TIMEOUT
                data = os.read(fd, 65536)
                if not data:
                    break
                _write(sink, relay.feed(data))
            _write(sink, relay.flush())
            proc.wait()
        status = run_dir / "status"
        if not status.is_file():
            _log("the guest stopped without reporting the command's exit status (see the console output above)")
            return EXIT_LANE_FAILED
        rc = int(status.read_text().strip() or EXIT_LANE_FAILED)
        end = time.monotonic()
        if "t" in started:
            if timings is not None:
                timings.update(boot=started["t"] - t0, command=end - started["t"], total=end - t0)
            _log(f"exit status {rc}; command and power-off {end - started['t']:.1f}s, total {end - t0:.1f}s")
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


# --- info -----------------------------------------------------------------------------------------------------------


def cached_kernel(spec: str = DEFAULT_SPEC) -> KernelImage | None:
    """The kernel SPEC names if it is already in the cache (never downloads); for debian-stable the one apt would
    fetch now, else the newest cached."""
    if is_path_spec(spec):
        return kernel_from_path(spec)
    want = None
    with contextlib.suppress(Exception):
        found = _apt_kernel_package(spec)
        if found:
            want = cache_dir() / f"{found[0]}_{_safe(found[1])}"
    if want is not None and (want / CACHE_STAMP).is_file():
        return _from_cache_dir(want)
    for d in _cached_kernels():
        if spec == DEFAULT_SPEC or d.name.startswith(spec + "_"):
            return _from_cache_dir(d)
    return None


def info(spec: str = DEFAULT_SPEC) -> dict[str, Any]:
    """The cached kernel (version, paths) and which emu.apply.kernel features its config has; never downloads."""
    k = cached_kernel(spec)
    d: dict[str, Any] = {"spec": spec, "cache": str(cache_dir()), "cached": k is not None,
                         "tools_missing": missing_tools()}
    if k is None:
        d["hint"] = "nothing cached yet: `emu kernel-lane run -- true` downloads and boots it"
        return d
    d.update(k.as_dict())
    cfg = parse_config(k.config.read_text()) if k.config else {}
    d["features"] = config_features(cfg) if cfg else {}
    d["feature_options"] = {name: cfg.get(opt, "n") for name, opt in FEATURE_CONFIG.items()} if cfg else {}
    return d
