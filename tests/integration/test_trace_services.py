"""emu trace through Services, in kube-proxy's iptables, nftables and IPVS modes: where the DNAT and the SNAT happen,
the rules that chose the endpoint (from the kernel's own trace), and a frag-needed sent back by a node.

In IPVS mode the endpoint is chosen and the DNAT done by IPVS at the LOCAL_IN hook (net/netfilter/ipvs), which is
not netfilter's rule evaluation and so not in its trace: the trace shows the rewrite from the packets themselves,
names no rule for it, and shows the iptables rules kube-proxy's IPVS proxier wrote (the ipset matches that accept
and masquerade, the source-range firewall that drops).  IPVS mode needs IP_VS and dummy: on a kernel without them
its parameter skips with the kernel-feature reason and tools/kernel-lane/run-tests runs it."""
from __future__ import annotations

import subprocess

import pytest

from emu.cluster import lifecycle as clusters
from emu.apply import netns
from emu.observe import probing
from emu.observe.trace import render, run
from tests.conftest import TOPOLOGIES

# a UDP NodePort whose only endpoint (local-0) lives on node-2: reached at node-1, it must cross VXLAN
UDP_NODEPORT = """
---
apiVersion: v1
kind: Service
metadata: {name: local-udp-np}
spec:
  type: NodePort
  selector: {app: local}
  ports: [{name: dns, port: 53, targetPort: 80, protocol: UDP, nodePort: 30053}]
"""


@pytest.fixture(scope="module", params=["iptables", "nftables",
                                       pytest.param("ipvs", marks=pytest.mark.kernel("ip_vs", "dummy"))])
def svc(request, emu_cluster, tmp_path_factory):
    p = tmp_path_factory.mktemp("trace-svc") / f"services-{request.param}.yaml"
    text = (TOPOLOGIES / "services.yaml").read_text().replace("mode: iptables", f"mode: {request.param}")
    p.write_text(text + UDP_NODEPORT)
    with emu_cluster(str(p)) as c:
        c.mode = request.param
        c.cl = clusters.open_cluster(c.name)
        yield c


def rulesets(c) -> dict[str, str]:
    return {n.name: netns.run_in(n.netns, lambda: subprocess.run(["nft", "-s", "list", "ruleset"],
                                                                 capture_output=True, text=True)).stdout
            for n in c.plan.nodes}


def events(packet: dict, where: str) -> list[dict]:
    return [e for v in packet["visits"] if v["where"] == where for t in v["rules"] for e in t["events"]]


def test_pod_to_cluster_ip_dnat_at_the_source_node_names_the_rules(svc):
    before = rulesets(svc)
    res = run.trace(svc.cl, "default/client-0", "svc/default/web:http")
    assert res["ok"], render.text(res)
    ep_ip = svc.pod_ip(res["answered_by"])
    dnat = [r for r in res["rewrites"] if r["kind"] == "dnat"]
    assert len(dnat) == 1
    assert (dnat[0]["where"], dnat[0]["from"], dnat[0]["to"]) == ("node/node-1", f"{svc.cluster_ip('default/web')}:80",
                                                                  f"{ep_ip}:80")
    ev = events(res["request"], "node/node-1")
    if svc.mode == "iptables":
        jumps = [e for e in ev if e["chain"].startswith("KUBE-SVC-") and e["verdict"].startswith("jump KUBE-SEP-")]
        assert len(jumps) == 1 and '"default/web:http -> ' + f'{ep_ip}:80"' in jumps[0]["iptables"]
        sep = jumps[0]["verdict"].split()[1]
        dnat_rule = next(e for e in ev if e["chain"] == sep and e["verdict"] == "accept")
        assert dnat_rule["iptables"].endswith(f"-j DNAT --to-destination {ep_ip}:80")
        assert dnat[0]["rule"]["chain"] == sep
    elif svc.mode == "ipvs":
        # IPVS rewrote it, after nat PREROUTING let it through: KUBE-SERVICES' last rule accepts a KUBE-CLUSTER-IP
        # member (acceptIPVSTraffic); no traced rule is a DNAT, so the rewrite names no rule
        assert "rule" not in dnat[0] and dnat[0]["by"].startswith("IPVS"), dnat[0]
        accept = [e for e in ev if e["chain"] == "KUBE-SERVICES" and e["verdict"] == "accept"]
        assert [e["iptables"] for e in accept] == [
            "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT"]
        assert not [e for e in ev if "dnat" in f"{e['rule'] or ''} {e['iptables'] or ''}".lower()]
    else:
        svc_chain = next(e for e in ev if e["chain"].startswith("service-") and "default/web/tcp/http" in e["chain"])
        assert svc_chain["verdict"].startswith(("goto endpoint-", "jump endpoint-")) and "numgen" in svc_chain["rule"]
        ep_chain = svc_chain["verdict"].split()[1]
        assert ep_ip in ep_chain
        assert any(e["chain"] == ep_chain and f"dnat to {ep_ip}:80" in (e["rule"] or "") for e in ev)
        assert dnat[0]["rule"]["chain"] == ep_chain
    # the other nodes did no NAT: the packet reaches the endpoint's node already DNATed
    assert not [r for r in res["rewrites"] if r["kind"] in ("dnat", "snat") and r["where"] != "node/node-1"]
    text = render.text(res)
    assert f"DNAT at node/node-1: {svc.cluster_ip('default/web')}:80 -> {ep_ip}:80" in text
    assert rulesets(svc) == before


def test_external_to_node_port_cluster_policy_shows_the_snat(svc):
    res = run.trace(svc.cl, "external", "nodeport/node-1:30080")
    assert res["ok"], render.text(res)
    snat = [r for r in res["rewrites"] if r["kind"] == "snat"]
    assert len(snat) == 1
    s = snat[0]
    assert s["where"] == "node/node-1" and s["from"].startswith("172.18.0.1:")
    assert s["to"].split(":")[0] == res["probe"]["client_ip_seen"]  # what the endpoint saw is the rewrite
    text = f"{s['rule'].get('iptables') or ''} {s['rule'].get('rule') or ''}".lower()
    assert "masquerade" in text
    dnat = next(r for r in res["rewrites"] if r["kind"] == "dnat")
    assert dnat["where"] == "node/node-1" and dnat["from"] == "172.18.0.2:30080"
    if svc.mode == "ipvs":  # the masquerade is KUBE-POSTROUTING's (KUBE-NODE-PORT marked it); the DNAT is IPVS's
        assert s["rule"]["iptables"].startswith('-A KUBE-POSTROUTING -m comment --comment '
                                                '"kubernetes service traffic requiring SNAT" -j MASQUERADE'), s
        assert "rule" not in dnat and dnat["by"].startswith("IPVS"), dnat
    # the reply is translated back on node-1 by conntrack (IPVS's own connection table in IPVS mode), by no rule
    back = {r["kind"]: r for r in res["reply"]["rewrites"] if r["kind"] in ("un-snat", "un-dnat")}
    assert back["un-snat"]["where"] == back["un-dnat"]["where"] == "node/node-1"
    assert back["un-snat"]["to"] == s["from"]


def test_oversized_df_over_vxlan_frag_needed_from_the_node(svc):
    res = run.trace(svc.cl, "external", "nodeport/node-1:30053", "udp", size=1460, df=True)
    assert not res["ok"] and res["verdict"] == "frag-needed"
    assert len(res["icmp_errors"]) == 1
    e = res["icmp_errors"][0]
    assert (e["generated_in"], e["sender"], e["type"], e["code"], e["mtu"]) == ("node/node-1", "172.18.0.2", 3, 4, 1450)
    assert e["path"]["hops"][-1]["where"] == "external" and e["path"]["hops"][-1]["dir"] == "in"
    assert res["drop"]["where"] == "node/node-1" and "mtu 1450" in res["drop"]["detail"]
    assert res["probe"]["icmp"]["mtu"] == 1450
    # the packet itself stopped at node-1 (it never reached flannel.1)
    assert res["request"]["hops"][-1]["where"] == "node/node-1"
    assert "ICMP error (dest-unreachable frag-needed mtu 1450) generated in node/node-1 by 172.18.0.2" in \
        render.text(res)


def test_drop_by_a_rule_is_named(svc):
    """loadBalancerSourceRanges: external is not in 10.0.0.0/8, so the node's firewall rule drops the SYN."""
    res = run.trace(svc.cl, "external", "lb/default/web-lb-restricted", timeout=0.5)
    assert probing.denial(res["probe"]) == "drop" and res["drop"]["why"] == "rule", render.text(res)
    svc.assert_reachable("default/client-0", "lb/default/web-lb-restricted")  # the control: a source in range
    assert res["drop"]["where"].startswith("node/")
    rule = res["drop"]["rule"]
    if svc.mode == "iptables":
        assert rule["iptables"].endswith("-j DROP") and "web-lb-restricted" in rule["iptables"]
    elif svc.mode == "ipvs":  # one chain for all Services: KUBE-LOAD-BALANCER-FW sent it there, no source range took it
        assert (rule["chain"], rule["iptables"]) == ("KUBE-SOURCE-RANGES-FIREWALL",
                                                     "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP"), rule
    else:
        assert "drop" in (rule["rule"] or "") or rule["type"] == "policy"
