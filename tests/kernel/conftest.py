"""Helpers for the tests that need kernel features this host may lack (run in the kernel lane).

The `kernel(...)` and `lane` markers are handled in tests/conftest.py, for tests wherever they live.  Every test
module here builds real network namespaces and so is marked `integration` (needs root).
"""
from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest

from emu.apply import netns


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
