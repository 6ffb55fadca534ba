"""The lane's kernel: Debian's stock kernel package, fetched with apt into the cache on first use, or a vmlinuz
given by path.

`ensure_kernel()` asks apt which versioned package `linux-image-amd64` depends on, fetches it with `apt-get download`,
unpacks it with `dpkg-deb -x` into the cache and runs `depmod` on it (the .deb ships no modules.dep).  `info()` says
what is cached and never downloads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from emu.lane.host import LaneError, cache_dir, check_output, log, missing_tools
from emu.lane.kconfig import FEATURE_CONFIG, config_features, parse_config

DEFAULT_SPEC = "debian-stable"
META_PACKAGE = "linux-image-amd64"  # Debian's "current stable kernel" package: it depends on the versioned one
CACHE_STAMP = ".emu-kernel-ready"
KEEP_KERNELS = 2  # downloaded kernels kept in the cache (the newest; older ones are removed after a download)


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
        log(f"downloading {pkg} {ver} with apt-get")
        # APT::Sandbox::User=root: the _apt user could not write to a root-owned cache directory.
        check_output(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{pkg}={ver}"],
                      f"downloading {pkg}", cwd=tmp)
        debs = list(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise LaneError(f"apt-get download {pkg} left {len(debs)} .deb files")
        root = tmp / "root"
        check_output(["dpkg-deb", "-x", str(debs[0]), str(root)], f"unpacking {debs[0].name}")
        debs[0].unlink()
        k = _kernel_in(root, pkg)
        check_output(["depmod", "-b", str(root), k.version], f"depmod {k.version}")
        (tmp / CACHE_STAMP).write_text(json.dumps({"package": pkg, "version": ver, "kernel": k.version}) + "\n")
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / CACHE_STAMP).is_file():  # a concurrent run that won the race is fine
                raise
        log(f"kernel {k.version} ready in {time.monotonic() - t0:.1f}s ({dest})")
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
