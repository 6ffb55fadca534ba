"""emu.apply.drivers on a real kernel (root): one throw-away network namespace per test, a batch of plan objects
given in the wrong order applied in felix's (the sets before the rules that use them, stale sets after the rules
that stopped using them), read back with the real tools.  The root namespace is never touched."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from emu.apply import drivers, netns, tools
from emu.plan.content import Command, DestroyIpsets, File, Ipsets, Ruleset

pytestmark = pytest.mark.integration


@pytest.fixture
def ns():
    name = f"emu-drvtest-{uuid.uuid4().hex[:10]}"
    netns.create_many([name])
    try:
        yield name
    finally:
        netns.remove(name)


SETS = ("create EMU-TEST-NEW hash:ip timeout 0\nadd EMU-TEST-NEW 10.0.0.1 timeout 0\n"
        "create EMU-TEST-OLD hash:ip timeout 0\n")
RULES = ("*filter\n:EMU-TEST - [0:0]\n-A EMU-TEST -m set --match-set EMU-TEST-NEW src -j ACCEPT\n"
         "-A EMU-TEST -m set --match-set EMU-TEST-OLD src -j DROP\nCOMMIT\n")


def test_a_batch_in_the_wrong_order_is_applied_in_felixs(ns: str, tmp_path: Path) -> None:
    drivers.apply([DestroyIpsets(ns, "n", ("EMU-TEST-GONE",)),  # nothing by that name: -exist makes it a no-op
                   File("$EMU_STATE/c/x.conf", "n", "dir $EMU_STATE/c\n"),
                   Ruleset(ns, "n", "iptables-nft-restore --noflush -w", RULES),
                   Ipsets(ns, "n", SETS),
                   Command(ns, "n", ("sysctl", "-w", "net.ipv4.ip_forward=1"))], state_dir=str(tmp_path))
    assert tools.check(ns, ["sysctl", "-n", "net.ipv4.ip_forward"]).strip() == "1"
    assert set(tools.check(ns, ["ipset", "list", "-n"]).split()) == {"EMU-TEST-NEW", "EMU-TEST-OLD"}
    assert "-A EMU-TEST -m set --match-set EMU-TEST-NEW src -j ACCEPT" in tools.check(ns, ["iptables-nft-save"])
    assert (tmp_path / "c" / "x.conf").read_text() == f"dir {tmp_path}/c\n"

    # the next sync: the rule that used the old set goes, and the old set after it (stale sets last)
    drivers.apply([DestroyIpsets(ns, "n", ("EMU-TEST-OLD",)),
                   Ruleset(ns, "n", "iptables-nft-restore --noflush -w",
                           "*filter\n:EMU-TEST - [0:0]\n-A EMU-TEST -m set --match-set EMU-TEST-NEW src -j ACCEPT\n"
                           "COMMIT\n")])
    assert tools.check(ns, ["ipset", "list", "-n"]).split() == ["EMU-TEST-NEW"]


def test_a_failure_is_one_line_naming_the_tool_the_namespace_and_stderr(ns: str) -> None:
    drivers.apply([Ipsets(ns, "n", SETS), Ruleset(ns, "n", "iptables-nft-restore --noflush -w", RULES)])
    with pytest.raises(drivers.ToolFailed) as e:  # still referenced by a rule: the kernel refuses
        drivers.apply([DestroyIpsets(ns, "n", ("EMU-TEST-OLD",))])
    assert str(e.value).startswith(f"ipset in {ns} failed: ") and len(str(e.value).splitlines()) == 1
    assert e.value.argv == ("ipset", "restore", "-exist") and e.value.stderr
