"""Tests that need kernel features this host may lack, and the kernel lane that provides them.

- `@pytest.mark.kernel("ip_vs", ...)`: the test needs those emu.kernel features. On a kernel without one it is
  skipped, naming the feature and the way to run it (tools/kernel-lane/run-tests). Inside the kernel lane
  (EMU_KERNEL_LANE=1) a missing feature fails the test instead: the lane exists to have them.
- `@pytest.mark.lane`: the test boots the lane's VM itself (slow, downloads the kernel once). It runs only when
  EMU_LANE_TESTS=1 (tools/kernel-lane/run-tests sets it), never inside the lane.

Every test module here builds real network namespaces and so is marked `integration` (needs root). The only hook
is one pytest calls per test item of this directory, so nothing here affects tests elsewhere.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest

from emu import kernel, netns

RUN_IT = "run it in the kernel lane (tools/kernel-lane/run-tests)"


def in_lane() -> bool:
    return os.environ.get("EMU_KERNEL_LANE") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lane") is not None:
        if in_lane():
            pytest.skip("boots the kernel lane's VM: not from inside the lane")
        if os.environ.get("EMU_LANE_TESTS") != "1":
            pytest.skip("boots the kernel lane's VM (slow): run tools/kernel-lane/run-tests, or set EMU_LANE_TESTS=1")
    names = [n for m in item.iter_markers("kernel") for n in m.args]
    if not names or os.geteuid() != 0:
        return  # without root the root conftest skips it (integration)
    feats = kernel.features()
    unknown = [n for n in names if n not in feats]
    if unknown:
        pytest.fail(f"@pytest.mark.kernel names unknown features {unknown}; known: {sorted(feats)}", pytrace=False)
    missing = [feats[n] for n in names if not feats[n].present]
    if not missing:
        return
    what = ", ".join(f"{f.name} ({f.detail})" for f in missing)
    if in_lane():
        pytest.fail(f"the kernel lane's kernel ({os.uname().release}) lacks {what}", pytrace=False)
    pytest.skip(f"needs {what}, which this kernel lacks: {RUN_IT}")


# --- helpers for the tests: namespaces that are always removed, and iproute2 inside them ----------------------------


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its stderr (a readable test failure)."""
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`ip -n NS ...`: every change is made inside a test namespace, never in the root one."""
    return sh("ip", "-n", ns, *args, check=check)


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def link_json(ns: str, dev: str) -> dict:
    return json.loads(ip(ns, "-d", "-s", "-j", "link", "show", "dev", dev).stdout)[0]


@pytest.fixture
def namespaces() -> Iterator[Callable[..., list[str]]]:
    """make(*roles) -> fresh namespaces named emu-kt-<random>-<role> with lo up; all removed after the test."""
    made: list[str] = []
    tag = secrets.token_hex(3)

    def make(*roles: str) -> list[str]:
        names = [f"emu-kt-{tag}-{r}" for r in roles]
        for n in names:
            netns.create(n)
            made.append(n)
            ip(n, "link", "set", "lo", "up")
        return names

    try:
        yield make
    finally:
        for n in reversed(made):
            with contextlib.suppress(OSError):
                netns.remove(n)


def veth(a: str, a_dev: str, a_cidr: str, b: str, b_dev: str, b_cidr: str) -> None:
    """A veth pair between namespaces A and B (created in A with its peer directly in B), addressed and up."""
    ip(a, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b)
    for ns, dev, cidr in ((a, a_dev, a_cidr), (b, b_dev, b_cidr)):
        ip(ns, "addr", "add", cidr, "dev", dev)
        ip(ns, "link", "set", dev, "up")
