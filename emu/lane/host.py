"""The host side of the kernel lane: its error, its cache directory, and the tools apt installs for it (QEMU,
busybox, kmod)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from emu.errors import EmuError

CACHE_ENV = "EMU_KERNEL_CACHE"

# Debian package -> a file it installs that the lane uses.
TOOLS = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": "/bin/busybox",
    "kmod": "/usr/sbin/depmod",
}
QEMU = TOOLS["qemu-system-x86"]
BUSYBOX = TOOLS["busybox-static"]


class LaneError(EmuError):
    """The lane could not be set up (a tool, a download, a kernel given by path)."""


def cache_dir() -> Path:
    """`$EMU_KERNEL_CACHE`, else ~/.cache/emu/kernel-lane/."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "emu" / "kernel-lane"


def log(msg: str) -> None:
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
    log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
                  *missing]):
        r = subprocess.run(argv, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise LaneError(f"{' '.join(argv[:2])} failed ({r.returncode}): {last_line(r.stderr or r.stdout)}")
    still = missing_tools()
    if still:
        raise LaneError(f"apt-get install finished but {' '.join(still)} is still missing")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def check_output(argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd)
    except FileNotFoundError:
        raise LaneError(f"{what}: {argv[0]} not found") from None
    if r.returncode != 0:
        raise LaneError(f"{what}: {' '.join(argv)} failed ({r.returncode}): {last_line(r.stderr or r.stdout)}")
    return r.stdout
