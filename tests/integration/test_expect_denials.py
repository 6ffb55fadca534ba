"""emu.testing's denial checks beyond the plugin's handle (whose own tests are in test_pytest_plugin.py): the
module-level expect_* functions every suite uses, a positive control of another destination, a probe result the
test already holds, and a whole matrix judged pair by pair.  A denial must name its kind and stand beside a
destination that answers: each check is also run where the destination is dead, and must fail."""
from __future__ import annotations


import pytest

from emu.cluster import lifecycle as clusters
from emu.testing import NETWORK_POLICY_DENIAL as POLICY
from emu.testing import expect_blocked, expect_denial, expect_matrix

DEAD = 8080  # nothing listens there: what a dead server leaves


def test_the_functions_take_a_handle_a_cluster_or_a_name(denied):
    for c in (denied, clusters.open_cluster(denied.name), denied.name):
        r = expect_blocked(c, "default/client", "default/web", by=POLICY)
        assert r["icmp"]["type"] == 3 and r["icmp"]["code"] == 3  # kube-router's REJECT: port unreachable


def test_a_control_of_another_port_of_the_same_pod(two):
    """No policy: a closed port is reset by web's kernel, while port 80 of the same pod answers."""
    r = expect_blocked(two, "default/client", "default/web", port=DEAD, by="reset",
                       control=("default/client", "default/web", 80))
    assert r["verdict"] == "refused" and r["icmp"] is None
    with pytest.raises(AssertionError) as e:  # the control names a dead port too: the reset proves nothing
        expect_blocked(two, "default/client", "default/web", port=DEAD, by="reset",
                       control=("default/client", "default/web", DEAD + 1))
    assert f"control:  default/client -> default/web tcp/{DEAD + 1}: FAILED" in str(e.value)
    with pytest.raises(AssertionError) as e:  # a reset is not what a policy answers
        expect_blocked(two, "default/client", "default/web", port=DEAD, by=POLICY,
                       control=("default/client", "default/web", 80))
    assert "expected: blocked by a reject with an ICMP destination unreachable" in str(e.value)


def test_a_probe_the_test_already_holds(denied):
    r = denied.probe("default/client", "default/web")
    assert expect_denial(denied, r, denied.probe("default/web", "default/web"), by=POLICY) is r
    with pytest.raises(AssertionError) as e:
        expect_denial(denied, r, denied.probe("default/web", "default/web", port=DEAD), by=POLICY)
    assert f"control:  default/web -> default/web tcp/{DEAD}: FAILED" in str(e.value)
    with pytest.raises(AssertionError) as e:
        expect_denial(denied, r, denied.probe("default/web", "default/web"), by="drop")
    assert "expected: blocked by a drop: nothing comes back (timeout)" in str(e.value)


def test_a_matrix_is_judged_pair_by_pair(denied):
    m = denied.matrix("tcp", 80, timeout=0.5)
    assert m["denials"]["default/client"]["default/web"] == "icmp-unreachable"
    assert m["denials"]["default/web"]["default/client"] is None  # it connected
    assert expect_matrix(denied, m, by=POLICY) is m
    with pytest.raises(AssertionError) as e:  # the kind is checked for each denied pair
        expect_matrix(denied, m, by="reset")
    assert "default/client -> default/web tcp/80" in str(e.value)
    assert "expected: blocked by a reject with a TCP RST" in str(e.value)


def test_a_matrix_of_a_dead_port_fails_by_its_control(denied):
    """The engine denies client -> web on any port, and the REJECT answers on any port: only the matrix's own
    control, web reaching itself, shows nothing serves there."""
    m = denied.matrix("tcp", DEAD, timeout=0.5)
    # a REJECT (or, when the node's ICMP rate limit swallowed its answer, a silence): never a connection
    assert m["denials"]["default/client"]["default/web"] in ("icmp-unreachable", "drop")
    with pytest.raises(AssertionError) as e:
        denied.assert_matrix(m, by=POLICY)
    assert f"control:  default/web -> default/web tcp/{DEAD}: FAILED" in str(e.value)


def test_a_matrix_that_disagrees_with_the_policies_fails(two):
    m = two.matrix("tcp", DEAD, timeout=0.5)  # no policy: every pair expected to connect, none does
    with pytest.raises(AssertionError) as e:
        expect_matrix(two, m)
    assert "the dataplane differs from the NetworkPolicies" in str(e.value)
    assert f"default/client -> default/web tcp/{DEAD}: expected allowed, observed refused" in str(e.value)


def test_an_unknown_kind_is_refused(two):
    with pytest.raises(ValueError, match="by='deny' is not one of drop, reject, reset, icmp-unreachable"):
        expect_blocked(two, "default/client", "default/web", by="deny")
