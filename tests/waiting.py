"""Waiting in tests: poll for the condition a test means, bounded generously, never sleep a guessed time.

A fixed sleep is either too short on a loaded machine (a flaky failure) or longer than needed everywhere; a tight
wall-clock window asserts a speed, which no test may.  `wait_until` returns as soon as the condition holds and
fails, naming what it waited for and what it saw last, only when a deadline far beyond any healthy run has passed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

GENEROUS = 30.0  # seconds: far beyond any healthy wait on this project's namespaces, daemons and probes


def wait_until(predicate: Callable[[], T], timeout: float = GENEROUS, what: str = "the condition",
               interval: float = 0.02, max_interval: float = 0.5) -> T:
    """Call `predicate` until it returns something truthy and return that value.

    Polls at `interval`, doubling up to `max_interval`, so a quick condition is seen at once and a slow one costs
    little CPU.  After `timeout` seconds it raises AssertionError: "timed out after Ns waiting for WHAT (last
    value: ...)".  An exception from `predicate` propagates at once: a predicate that cannot be evaluated is a
    bug, not a condition that does not hold yet."""
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})")
        time.sleep(min(pause, deadline - now))
        pause = min(pause * 2, max_interval)
