"""tests/waiting.py: returns the predicate's first truthy value, fails naming what it waited for, never swallows."""
import itertools

import pytest

from tests.waiting import wait_until


def test_returns_the_first_truthy_value():
    values = iter([0, None, "", "ready"])
    assert wait_until(lambda: next(values), timeout=5) == "ready"


def test_times_out_naming_what_and_the_last_value():
    with pytest.raises(AssertionError, match=r"timed out after 0.2s waiting for the moon \(last value: 0\)"):
        wait_until(lambda: 0, timeout=0.2, what="the moon")


def test_an_error_in_the_predicate_propagates_at_once():
    calls = itertools.count()
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: next(calls) or 1 / 0, timeout=30)
