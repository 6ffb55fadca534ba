"""The kernel lane's pure parts (no root, no VM): module dependencies, the initramfs and its scripts, kernel
configs, apt output, command quoting, the console relay. The VM itself is tested by tests/kernel/test_lane_exit.py
(it boots it) and tools/kernel-lane/run-tests."""
from __future__ import annotations

import lzma
import os
import stat
import subprocess
from pathlib import Path

import pytest

from emu.lane import bootimage, guest, host, initramfs, kconfig, kernels, vm
from emu.lane.host import LaneError
from emu.lane.kernels import KernelImage

MODULES_DEP = """\
kernel/fs/overlayfs/overlay.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/char/hw_random/rng-core.ko.xz
kernel/drivers/char/hw_random/rng-core.ko.xz:
"""


# --- module dependencies --------------------------------------------------------------------------------------------


def test_module_name():
    assert initramfs.module_name("kernel/net/9p/9pnet_virtio.ko") == "9pnet_virtio"
    assert initramfs.module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert initramfs.module_name("x/overlay.ko.zst") == "overlay"


def test_resolve_modules_loads_each_after_its_dependencies():
    order = initramfs.resolve_modules(initramfs.INITRAMFS_MODULES, MODULES_DEP)
    names = [initramfs.module_name(p) for p in order]
    assert len(names) == len(set(names))
    assert set(names) == {"virtio", "virtio_ring", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
                          "rng_core", "virtio_rng", "9pnet", "9pnet_virtio", "netfs", "fscache", "9p", "overlay"}
    deps = initramfs.parse_modules_dep(MODULES_DEP)
    for i, path in enumerate(order):
        assert set(deps[path]) <= set(order[:i]), f"{path} loaded before one of its dependencies"


def test_resolve_modules_skips_builtins_and_rejects_unknown_names():
    builtin = "kernel/fs/overlayfs/overlay.ko\nkernel/drivers/virtio/virtio.ko\n"
    dep = "kernel/drivers/virtio/virtio_ring.ko:\n"  # a kernel with virtio and overlay built in
    assert initramfs.resolve_modules(["virtio", "overlay", "virtio_ring"], dep, builtin) == [
        "kernel/drivers/virtio/virtio_ring.ko"]
    with pytest.raises(LaneError, match="nosuch"):
        initramfs.resolve_modules(["nosuch"], MODULES_DEP)


def test_resolve_modules_reports_a_cycle():
    with pytest.raises(LaneError, match="cycle"):
        initramfs.resolve_modules(["a"], "a.ko: b.ko\nb.ko: a.ko\n")


# --- kernel config and apt output -----------------------------------------------------------------------------------


def test_parse_config_and_features():
    cfg = kconfig.parse_config("""
# Automatically generated file; DO NOT EDIT.
CONFIG_IP_VS=m
CONFIG_DUMMY=y
# CONFIG_NET_SCH_NETEM is not set
CONFIG_LOCALVERSION=""
CONFIG_DEFAULT_HOSTNAME="(none)"
""")
    assert cfg["CONFIG_IP_VS"] == "m" and cfg["CONFIG_DUMMY"] == "y"
    assert cfg["CONFIG_NET_SCH_NETEM"] == "n" and cfg["CONFIG_DEFAULT_HOSTNAME"] == "(none)"
    feats = kconfig.config_features(cfg)
    assert feats["ip_vs"] and feats["dummy"]
    assert not feats["netem"] and not feats["sctp"]  # not set, and absent
    assert set(feats) == set(kconfig.FEATURE_CONFIG)


def test_feature_names_match_emu_kernel():
    from emu.apply import kernel

    probed = set(kernel.LINK_KINDS) | {"ip_vs", "sctp", "netem", "nftables", "br_netfilter"}
    assert set(kconfig.FEATURE_CONFIG) == probed


def test_parse_apt_output():
    depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-27-amd64\n"
    assert kernels.parse_apt_depends(depends) == "linux-image-6.1.0-27-amd64"
    assert kernels.parse_apt_depends("linux-image-amd64\n") is None
    policy = "linux-image-6.1.0-27-amd64:\n  Installed: (none)\n  Candidate: 6.1.115-1\n  Version table:\n"
    assert kernels.parse_apt_candidate(policy) == "6.1.115-1"
    assert kernels.parse_apt_candidate("x:\n  Installed: (none)\n  Candidate: (none)\n") is None


# --- scripts and quoting --------------------------------------------------------------------------------------------


def _sh(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True)


def test_command_line_quoting_round_trips_through_sh():
    cmd = ["printf", "[%s]", "two words", "it's", "$HOME", "`id`", "a\"b", "*", ""]
    r = _sh(guest.command_line(cmd))
    assert r.returncode == 0
    assert r.stdout == "[two words][it's][$HOME][`id`][a\"b][*][]"


def test_boot_env_values_survive_sourcing(tmp_path):
    env = tmp_path / "boot.env"
    env.write_text(guest.boot_env("/work/my project", "/root/.cache/x's/lib/modules/6.1.0-1-amd64", "6.1.0-1-amd64"))
    r = _sh(f'. "{env}"; printf "%s\\n" "$EMU_PROJECT" "$EMU_MODULES" "$EMU_KVER" "$EMU_PROJECT_CACHE"')
    assert r.stdout.splitlines() == ["/work/my project", "/root/.cache/x's/lib/modules/6.1.0-1-amd64",
                                     "6.1.0-1-amd64", "cache=loose"]


def test_init_script_is_valid_sh_and_mounts_in_order():
    mods = ["kernel/drivers/virtio/virtio.ko", "kernel/fs/9p/9p.ko"]
    s = initramfs.init_script(mods, "6.1.0-1-amd64")
    assert s.startswith("#!/bin/busybox sh\n")
    assert subprocess.run(["sh", "-n"], input=s, text=True).returncode == 0
    assert s.index("load kernel/drivers/virtio/virtio.ko") < s.index("load kernel/fs/9p/9p.ko") < s.index("hostroot")
    root = next(ln for ln in s.splitlines() if " hostroot " in ln)
    assert ",ro," in root  # the host's / is never written
    assert "upperdir=" in s and "switch_root /newroot" in s
    assert s.index("mount --bind") < s.index("switch_root")
    assert "chroot" not in s  # chroot breaks module auto-loading


def test_guest_script_runs_the_command_and_reports_its_status():
    s = guest.guest_script(["sh", "-c", "exit 3"], "/work/p q", {"A": "x y", "PATH": "/usr/bin"}, preload=["m1"])
    assert subprocess.run(["sh", "-n"], input=s, text=True).returncode == 0
    assert "(cd '/work/p q' && exec sh -c 'exit 3') </dev/null" in s
    assert "export A='x y'" in s and "modprobe -q -a m1" in s
    status = s.index(f"> {guest.LANE_MOUNT}/status.tmp")
    assert s.index(guest.START_MARKER) < s.index("exec sh -c") < status < s.index("poweroff -f")
    with pytest.raises(ValueError):
        guest.guest_script([], "/", {})


def test_guest_env(monkeypatch):
    monkeypatch.setenv("EMU_STATE_DIR", "/x")
    monkeypatch.setenv("SECRET_TOKEN", "nope")
    env = guest.guest_env(vm.project_dir(), {"EXTRA": "1"})
    assert env["EMU_STATE_DIR"] == "/x" and env["EXTRA"] == "1" and env["EMU_KERNEL_LANE"] == "1"
    assert "SECRET_TOKEN" not in env
    assert env["HOME"] == "/root" and "/usr/sbin" in env["PATH"]


# --- qemu -----------------------------------------------------------------------------------------------------------


def _kernel(tmp_path) -> KernelImage:
    return KernelImage("6.1.0-1-amd64", tmp_path / "vmlinuz", tmp_path / "mods", None, "test")


def test_qemu_argv_is_software_emulation_without_network(tmp_path):
    argv = vm.qemu_argv(tmp_path / "vmlinux", tmp_path / "i.cpio", tmp_path / "run", tmp_path / "proj", "2G", 3)
    joined = " ".join(argv)
    assert "kvm" not in joined.lower()
    assert argv[argv.index("-accel") + 1].startswith("tcg")
    assert argv[argv.index("-nic") + 1] == "none"
    assert argv[argv.index("-m") + 1] == "2G" and argv[argv.index("-smp") + 1] == "3"
    assert "-no-reboot" in argv and "panic=-1" in argv[argv.index("-append") + 1]
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    root = next(f for f in fsdevs if "id=hostroot" in f)
    assert "path=/," in root and "readonly=on" in root
    assert any(f"path={tmp_path / 'proj'}," in f and "readonly" not in f for f in fsdevs)


# --- console relay --------------------------------------------------------------------------------------------------


def test_console_relay_strips_cr_and_swallows_the_marker():
    seen = []
    r = guest.ConsoleRelay(lambda: seen.append(True))
    m = guest.START_MARKER.encode()
    out = r.feed(b"boot line\r\n" + m[:5]) + r.feed(m[5:] + b"\r\nhello\r") + r.feed(b"\nworld") + r.flush()
    assert out == b"boot line\nhello\nworld"
    assert seen == [True]


def test_console_relay_passes_partial_lines_at_once():
    r = guest.ConsoleRelay()
    assert r.feed(b"....") == b"...."  # pytest's progress dots must show before the newline
    assert r.feed(b"F\r") == b"F"
    assert r.feed(b"\rx\n") == b"\r\rx\n"  # lone CRs (progress bars) are kept; only CRLF becomes LF
    assert r.feed(b"@@not the marker line\n") == b"@@not the marker line\n"


# --- cpio and initramfs ---------------------------------------------------------------------------------------------


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """A minimal newc reader: {name: (mode, data, (rdevmajor, rdevminor))}."""
    out = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", pos
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data[pos:pos + size], (rmaj, rmin))
        pos = (pos + size + 3) & ~3


def test_cpio_newc_round_trips():
    entries = [("bin", 0o040755, b""), ("bin/x", 0o100755, b"abc"), ("dev/console", 0o020600, b"5:1"),
               ("init", 0o100755, b"#!/bin/sh\n" * 7)]
    got = _read_newc(initramfs.cpio_newc(entries))
    assert got["bin/x"] == (0o100755, b"abc", (0, 0))
    assert got["init"][1] == b"#!/bin/sh\n" * 7
    mode, _, rdev = got["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5, 1)
    assert stat.S_ISDIR(got["bin"][0])


def _fake_kernel_tree(tmp_path) -> KernelImage:
    ver = "6.1.0-1-amd64"
    mods = tmp_path / "root" / "lib" / "modules" / ver
    for line in MODULES_DEP.splitlines():
        p = mods / line.split(":")[0]
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = b"\x7fELF module " + p.name.encode()
        p.write_bytes(lzma.compress(payload) if p.name.endswith(".xz") else payload)
    (mods / "modules.dep").write_text(MODULES_DEP)
    boot = tmp_path / "root" / "boot"
    boot.mkdir()
    (boot / f"vmlinuz-{ver}").write_bytes(b"kernel")
    (boot / f"config-{ver}").write_text("CONFIG_IP_VS=m\n")
    return kernels.kernel_from_path(boot / f"vmlinuz-{ver}")


def test_build_initramfs_is_cached_and_holds_decompressed_modules(tmp_path, monkeypatch):
    monkeypatch.setenv(host.CACHE_ENV, str(tmp_path / "cache"))
    k = _fake_kernel_tree(tmp_path)
    assert k.version == "6.1.0-1-amd64" and k.config is not None
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF busybox")
    first = initramfs.build_initramfs(k, busybox)
    assert first.parent == tmp_path / "cache" / "initramfs"
    mtime = first.stat().st_mtime_ns
    assert initramfs.build_initramfs(k, busybox) == first and first.stat().st_mtime_ns == mtime
    files = _read_newc(first.read_bytes())
    base = "lib/modules/6.1.0-1-amd64/"
    assert files[base + "kernel/drivers/char/hw_random/virtio-rng.ko"][1] == b"\x7fELF module virtio-rng.ko.xz"
    assert files["bin/busybox"][1] == b"\x7fELF busybox"
    init = files["init"][1].decode()
    assert "load kernel/drivers/char/hw_random/rng-core.ko" in init and ".xz" not in init
    assert stat.S_ISCHR(files["dev/console"][0])


# --- kernels by path, cache dir -------------------------------------------------------------------------------------


def test_kernel_from_path_finds_modules_and_config(tmp_path):
    k = _fake_kernel_tree(tmp_path)
    assert k.modules == tmp_path / "root" / "lib" / "modules" / "6.1.0-1-amd64"
    assert k.source == "path"
    assert kernels.ensure_kernel(str(k.vmlinuz)) == k  # a PATH spec never downloads


def test_kernel_from_path_errors(tmp_path):
    with pytest.raises(LaneError, match="no such kernel image"):
        kernels.kernel_from_path(tmp_path / "nope")
    img = tmp_path / "vmlinuz-9.9"
    img.write_bytes(b"k")
    mods = tmp_path / "lib" / "modules" / "9.9"
    mods.mkdir(parents=True)
    with pytest.raises(LaneError, match="no modules.dep"):
        kernels.kernel_from_path(img)
    (mods / "modules.dep").write_text("")
    assert kernels.kernel_from_path(img).version == "9.9"


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv(host.CACHE_ENV, str(tmp_path))
    assert host.cache_dir() == tmp_path
    monkeypatch.delenv(host.CACHE_ENV)
    assert host.cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "emu" / "kernel-lane"


def test_run_rejects_an_empty_command():
    with pytest.raises(LaneError):
        vm.run([])


# --- the boot image -------------------------------------------------------------------------------------------------


def _elf_with_note(note_type: int) -> bytes:
    """A minimal ELF64 header with one PT_NOTE segment holding one "Xen" note of NOTE_TYPE."""
    le = "little"
    note = (4).to_bytes(4, le) + (4).to_bytes(4, le) + note_type.to_bytes(4, le) + b"Xen\0" + b"\1" * 4
    hdr = bytearray(64)
    hdr[:6] = b"\x7fELF\x02\x01"
    hdr[0x20:0x28] = (64).to_bytes(8, "little")  # e_phoff
    hdr[0x36:0x38] = (56).to_bytes(2, "little")  # e_phentsize
    hdr[0x38:0x3A] = (1).to_bytes(2, "little")  # e_phnum
    ph = bytearray(56)
    ph[0:4] = (4).to_bytes(4, "little")  # PT_NOTE
    ph[8:16] = (120).to_bytes(8, "little")  # p_offset
    ph[32:40] = len(note).to_bytes(8, "little")  # p_filesz
    return bytes(hdr + ph + note)


def test_has_pvh_note():
    assert bootimage.has_pvh_note(_elf_with_note(bootimage.XEN_ELFNOTE_PHYS32_ENTRY))
    assert not bootimage.has_pvh_note(_elf_with_note(5))
    assert not bootimage.has_pvh_note(b"MZ not an elf" * 10)


def test_extract_vmlinux_finds_the_compressed_elf():
    elf = _elf_with_note(bootimage.XEN_ELFNOTE_PHYS32_ENTRY) + b"\0" * 1000
    # setup code, a false xz magic, then the real stream (as in a bzImage)
    bz = b"MZ" + b"\0" * 500 + b"\xfd7zXZ\x00garbage" + lzma.compress(elf) + b"\0" * 64
    assert bootimage.extract_vmlinux(bz) == elf
    assert bootimage.extract_vmlinux(b"MZ no kernel here") is None


def test_boot_image_falls_back_to_the_bzimage(tmp_path, monkeypatch):
    monkeypatch.setenv(host.CACHE_ENV, str(tmp_path / "cache"))
    k = _fake_kernel_tree(tmp_path)  # its "vmlinuz" holds no ELF
    assert bootimage.boot_image(k) == k.vmlinuz
    assert bootimage.boot_image(k) == k.vmlinuz  # remembered
    k.vmlinuz.write_bytes(b"MZ" + lzma.compress(_elf_with_note(bootimage.XEN_ELFNOTE_PHYS32_ENTRY)))
    img = bootimage.boot_image(k)  # a new file (size/mtime): looked at again
    assert img.name.startswith("6.1.0-1-amd64-") and img.name.endswith(".elf")
    assert img.read_bytes()[:4] == b"\x7fELF"


def test_prune_cache_keeps_the_newest_kernels(tmp_path, monkeypatch):
    monkeypatch.setenv(host.CACHE_ENV, str(tmp_path))
    for i, ver in enumerate(["6.1.0-1-amd64", "6.1.0-2-amd64", "6.1.0-3-amd64"]):
        d = tmp_path / f"linux-image-{ver}_{i}"
        (d / "root" / "lib" / "modules" / ver).mkdir(parents=True)
        stamp = d / kernels.CACHE_STAMP
        stamp.write_text(f'{{"package": "linux-image-{ver}", "version": "{i}", "kernel": "{ver}"}}\n')
        os.utime(stamp, (1000 + i, 1000 + i))
        for sub, suffix in (("vmlinux", ".elf"), ("initramfs", ".cpio")):
            (tmp_path / sub).mkdir(exist_ok=True)
            (tmp_path / sub / f"{ver}-abc{suffix}").write_bytes(b"x")
    removed = kernels.prune_cache(keep=2)
    assert tmp_path / "linux-image-6.1.0-1-amd64_0" in removed
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("linux-image")) == [
        "linux-image-6.1.0-2-amd64_1", "linux-image-6.1.0-3-amd64_2"]
    assert sorted(p.name for p in (tmp_path / "vmlinux").iterdir()) == ["6.1.0-2-amd64-abc.elf",
                                                                         "6.1.0-3-amd64-abc.elf"]
    assert not (tmp_path / "initramfs" / "6.1.0-1-amd64-abc.cpio").exists()


def test_run_refuses_to_nest(monkeypatch):
    monkeypatch.setenv("EMU_KERNEL_LANE", "1")
    with pytest.raises(LaneError, match="nest"):
        vm.run(["true"])


def test_kernel_specs():
    assert not kernels.is_path_spec("debian-stable")
    assert not kernels.is_path_spec("linux-image-6.1.0-27-amd64")
    assert kernels.is_path_spec("/boot/vmlinuz-6.1.0-27-amd64")
    assert kernels.is_path_spec("./linux-image-custom/vmlinuz")
    assert kernels.is_path_spec("vmlinuz")
