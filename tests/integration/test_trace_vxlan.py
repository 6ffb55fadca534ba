"""emu trace on flannel vxlan and host-gw: the exact path a packet takes, its headers (VXLAN outer and inner), the
rules it met, traceroute, fragmentation, pcap/svg output, and that a trace leaves nothing behind."""
from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

from emu.cluster import lifecycle as clusters
from emu.apply import netns
from emu.observe import probe
from emu.apply import state
from emu.cli.trace import capture as capture_cmd
from emu.cli.trace import trace as trace_cmd
from emu.observe.trace import fragments, run, traceroute
from tests.conftest import ROOT, TOPOLOGIES
from tests.waiting import wait_until

FLANNEL_VXLAN_PORT = 8472  # flannel's vxlan backend uses the Linux kernel's default port, not IANA's 4789
NODE1, NODE2 = "172.18.0.2", "172.18.0.3"
WEB0, WEB1 = "10.244.0.2", "10.244.1.2"


def node_rulesets(c) -> dict[str, str]:
    out = {}
    for n in c.plan.nodes:
        out[n.name] = netns.run_in(n.netns, lambda: subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True,
                                                                  text=True)).stdout
    return out


def stray_processes(c) -> list[str]:
    """nft monitor / tcpdump processes of ours: children of this process, or running in one of the cluster's
    namespaces (`ip netns exec` and the trace's helpers enter them).  Others' captures on this host are not ours
    to report."""
    spaces = set()
    for name in state.load(c.name).netns:
        try:
            st = os.stat(netns.path(name))
        except OSError:
            continue
        spaces.add((st.st_dev, st.st_ino))
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            ns = os.stat(f"/proc/{pid}/ns/net")
        except (OSError, IndexError, ValueError):
            continue
        text = b" ".join(argv).decode(errors="replace")
        if not (("nft" in text and "monitor" in text) or
                os.path.basename(argv[0].decode(errors="replace")) == "tcpdump"):
            continue
        if ppid == os.getpid() or (ns.st_dev, ns.st_ino) in spaces:
            out.append(text)
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def where(hops: list[dict]) -> list[tuple[str, str, str]]:
    return [(h["where"], h["iface"], h["dir"]) for h in hops]


def veth(c, pod: str) -> str:
    return c.plan.pod(pod).host_link.name


@pytest.fixture(scope="module")
def cl(vxlan):
    return clusters.open_cluster(vxlan.name)


def test_pod_to_pod_across_nodes_exact_path_and_vxlan_headers(vxlan, cl):
    res = run.trace(cl, "default/web-0", "default/web-1", "tcp", 80)
    assert res["ok"] and res["answered_by"] == "default/web-1"
    req = res["request"]
    assert where(req["hops"]) == [
        ("default/web-0", "eth0", "out"),
        ("node/node-1", veth(vxlan, "default/web-0"), "in"),
        ("node/node-1", "cni0", "in"),
        ("node/node-1", "flannel.1", "out"),
        ("node/node-1", "eth0", "out"),
        ("underlay", "to-node-1", "in"),
        ("underlay", "to-node-2", "out"),
        ("node/node-2", "eth0", "in"),
        ("node/node-2", "flannel.1", "in"),
        ("node/node-2", "cni0", "out"),
        ("node/node-2", veth(vxlan, "default/web-1"), "out"),
        ("default/web-1", "eth0", "in"),
    ]
    for h in req["hops"][4:8]:  # on the wire between the nodes: VXLAN, outer node IPs, UDP 8472, VNI 1
        enc = h["headers"]["encap"]
        assert (enc["ip"]["src"], enc["ip"]["dst"], enc["udp"]["dport"], enc["vni"]) == \
            ("172.18.0.2", "172.18.0.3", 8472, 1)
        assert (h["headers"]["ip"]["src"], h["headers"]["ip"]["dst"]) == ("10.244.0.2", "10.244.1.2")
        assert h["headers"]["tcp"]["dport"] == 80 and h["headers"]["tcp"]["flags"] == "S"
    assert all("encap" not in h["headers"] for h in req["hops"][:4] + req["hops"][8:])
    assert [h["headers"]["ip"]["ttl"] for h in req["hops"]] == [64, 64, 64, 63, 63, 63, 63, 63, 63, 62, 62, 62]
    kinds = [(r["kind"], r["where"]) for r in req["rewrites"]]
    assert ("vxlan-encap", "node/node-1") in kinds and ("vxlan-decap", "node/node-2") in kinds
    assert not any(k in ("dnat", "snat") for k, _ in kinds)
    # the routing decision on node-1 names flannel's route to node-2's subnet
    v1 = next(v for v in req["visits"] if v["where"] == "node/node-1")
    assert v1["route"]["route"] == "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink"
    # the rules it met on node-1, from the kernel's trace: flannel's forward rule accepted it
    events = [e for t in v1["rules"] for e in t["events"]]
    assert any(e["chain"] == "FLANNEL-FWD" and e["verdict"] == "accept" and
               e["iptables"] == '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT'
               for e in events)
    # the reply takes the mirror path back
    rep = res["reply"]
    assert rep["hops"][0]["where"] == "default/web-1" and rep["hops"][-1]["where"] == "default/web-0"
    assert rep["hops"][4]["headers"]["encap"]["ip"]["src"] == "172.18.0.3"


def test_trace_leaves_nothing_behind(vxlan, cl):
    before_rules, fds = node_rulesets(vxlan), open_fds()
    threads = len(__import__("threading").enumerate())
    run.trace(cl, "default/web-0", "default/web-2", "udp", 80)
    run.trace(cl, "default/web-0", "default/web-1", "icmp")
    assert node_rulesets(vxlan) == before_rules
    assert "emu-trace" not in "".join(before_rules.values())
    assert open_fds() == fds and len(__import__("threading").enumerate()) == threads
    assert stray_processes(vxlan) == []


def test_interrupted_trace_leaves_nothing_behind(vxlan, cl):
    """SIGINT (Ctrl-C) while the probe waits for an answer that never comes: the tables go all the same."""
    before = node_rulesets(vxlan)
    env = dict(os.environ)
    code = "from emu.cli.trace import trace; trace(prog_name='emu trace')"
    # 10.244.1.200 is in node-2's pod subnet but nobody has it: the SYN waits for ARP and times out
    proc = subprocess.Popen([sys.executable, "-c", code, "default/web-0", "10.244.1.200:80", "--timeout", "60",
                             "--cluster", vxlan.name], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_until(lambda: "emu-trace" in node_rulesets(vxlan)["node-2"], what="the trace to install its tables")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # the test failed before the trace was interrupted: stop it as Ctrl-C would
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert node_rulesets(vxlan) == before
    assert stray_processes(vxlan) == []


def test_pcap_and_svg(vxlan, cl, tmp_path):
    res = run.trace(cl, "default/web-0", "default/web-1", "udp", 80, pcap_dir=str(tmp_path / "pcap"),
                    svg=str(tmp_path / "path.svg"))
    assert res["ok"], res.get("notes")
    names = sorted(os.path.basename(p) for p in res["pcaps"])
    assert f"{vxlan.name}.node-1_flannel.1.pcap" in names and f"{vxlan.name}.underlay_to-node-2.pcap" in names
    d = tmp_path / "pcap"
    # node-1's eth0 carries the flow VXLAN-encapsulated: out with node-1's MAC and address, back with node-2's
    wire = rdpcap(str(d / f"{vxlan.name}.node-1_eth0.pcap"))
    mac1 = link_mac(vxlan.netns("node/node-1"), "eth0")
    assert [vxlan_flow(p) for p in wire] == [
        ((NODE1, NODE2, FLANNEL_VXLAN_PORT, 1), (WEB0, WEB1, "udp", 80)),
        ((NODE2, NODE1, FLANNEL_VXLAN_PORT, 1), (WEB1, WEB0, "udp", None)),
    ]
    assert [p[Ether].src == mac1 for p in wire] == [True, False]  # the request leaves, the reply arrives
    assert wire[0][UDP].dport == FLANNEL_VXLAN_PORT and wire[1][UDP].dport == FLANNEL_VXLAN_PORT
    # flannel.1 is where the kernel encapsulates: the same packets, still the pods' own
    inner = rdpcap(str(d / f"{vxlan.name}.node-1_flannel.1.pcap"))
    assert [(p[IP].src, p[IP].dst, p[IP].proto) for p in inner] == [(WEB0, WEB1, 17), (WEB1, WEB0, 17)]
    assert not any(p[UDP].dport == FLANNEL_VXLAN_PORT for p in inner)
    assert (inner[0][UDP].dport, inner[1][UDP].sport) == (80, 80)
    svg = html.unescape((tmp_path / "path.svg").read_text())  # graphviz writes "-" as &#45;
    assert svg.lstrip().startswith("<?xml") and "node/node-1" in svg and "flannel.1" in svg


def test_cli_text_and_json(vxlan):
    r = CliRunner().invoke(trace_cmd, ["default/web-0", "default/web-1", "--cluster", vxlan.name])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("trace default/web-0 -> default/web-1 (10.244.1.2) tcp/80: connected")
    assert "VXLAN encapsulation on eth0: outer 172.18.0.2 -> 172.18.0.3 udp/8472 vni 1" in r.output
    assert "route  10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in r.output
    r = CliRunner().invoke(trace_cmd, ["default/web-0", "default/web-1", "-o", "json", "--no-rules",
                                       "--cluster", vxlan.name])
    assert r.exit_code == 0 and '"request"' in r.output and '"rules_traced": false' in r.output


def test_traceroute_names_each_router(vxlan, cl):
    for proto in ("udp", "tcp", "icmp"):
        res = traceroute.traceroute(cl, "default/web-0", "default/web-1", proto)
        assert res["reached"], res
        assert [(h["address"], h["name"]) for h in res["hops"]] == [
            ("10.244.0.1", "node/node-1"), ("10.244.1.0", "node/node-2"), ("10.244.1.2", "default/web-1")]
    text = traceroute.traceroute_text(res)
    assert "1  10.244.0.1 (node/node-1)" in text


def test_fragmentation_details(vxlan, cl):
    res = fragments.fragments(cl, "default/web-0", "default/web-1", 3000, "udp")
    assert res["ok"] and res["fragmented"] and res["count"] == 3
    assert [f["offset"] for f in res["fragments"]] == [0, 1424, 2848]
    assert sum(f["bytes"] for f in res["fragments"]) == 3008  # UDP header + 3000 bytes
    assert res["reassembled_at"] == "default/web-1"
    assert res["probe"]["bytes_answered"] == 3000
    assert "3 left default/web-0 eth0" in fragments.fragments_text(res)
    small = fragments.fragments(cl, "default/web-0", "default/web-1", 100, "icmp")
    assert not small["fragmented"] and small["count"] == 1


def test_capture_writes_a_pcap_and_stops(vxlan, tmp_path):
    """`emu capture -w` on node-1's eth0 with a filter, while web-0 sends UDP to web-1: the file holds exactly
    the encapsulated datagrams of that flow, and no tcpdump is left running."""
    out = tmp_path / "c.pcap"
    stop = threading.Event()
    answered: list[bool] = []
    src = vxlan.netns("default/web-0")

    def traffic() -> None:  # until the capture has its packets: tcpdump may start after the first probe
        while not stop.is_set():
            answered.append(probe.udp(src, WEB1, 80, timeout=1.0).ok)
            stop.wait(0.1)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        r = CliRunner().invoke(capture_cmd, ["node/node-1:eth0", "--filter", f"udp port {FLANNEL_VXLAN_PORT}",
                                             "-w", str(out), "--count", "4", "--seconds", "60",
                                             "--cluster", vxlan.name])
    finally:
        stop.set()
        t.join(30)
    assert r.exit_code == 0, r.output
    assert any(answered), answered
    pkts = rdpcap(str(out))
    assert len(pkts) == 4  # --count: tcpdump stopped after four packets, well before --seconds
    flows = {vxlan_flow(p) for p in pkts}
    assert flows == {((NODE1, NODE2, FLANNEL_VXLAN_PORT, 1), (WEB0, WEB1, "udp", 80)),
                     ((NODE2, NODE1, FLANNEL_VXLAN_PORT, 1), (WEB1, WEB0, "udp", None))}, flows
    assert stray_processes(vxlan) == []


def link_mac(ns: str, dev: str) -> str:
    (link,) = json.loads(subprocess.run(["ip", "-j", "-n", ns, "link", "show", dev], capture_output=True, text=True,
                                        check=True).stdout)
    return link["address"]


def vxlan_flow(p) -> tuple[tuple[str, str, int, int], tuple[str, str, str, int | None]]:
    """A VXLAN frame as ((outer src, outer dst, outer UDP dport, VNI), (inner src, inner dst, proto, inner dport
    when it goes to the pod's well-known port 80, else None)).  Scapy decodes VXLAN only on IANA's 4789, so the
    8472 payload is decoded here."""
    assert p.haslayer(UDP), p.summary()
    v = VXLAN(bytes(p[UDP].payload))
    ip = v[IP]
    l4 = ip[UDP]
    return ((p[IP].src, p[IP].dst, p[UDP].dport, v.vni),
            (ip.src, ip.dst, "udp", l4.dport if l4.dport == 80 else None))


def test_host_gw_has_no_encapsulation_and_names_the_node_route(hostgw):
    cl = clusters.open_cluster(hostgw.name)
    res = run.trace(cl, "default/web-0", "default/web-1", "tcp", 80)
    assert res["ok"]
    req = res["request"]
    assert where(req["hops"]) == [
        ("default/web-0", "eth0", "out"), ("node/node-1", veth(hostgw, "default/web-0"), "in"),
        ("node/node-1", "cni0", "in"), ("node/node-1", "eth0", "out"), ("underlay", "to-node-1", "in"),
        ("underlay", "to-node-2", "out"), ("node/node-2", "eth0", "in"), ("node/node-2", "cni0", "out"),
        ("node/node-2", veth(hostgw, "default/web-1"), "out"), ("default/web-1", "eth0", "in")]
    assert all("encap" not in h["headers"] for h in req["hops"])
    assert not any(r["kind"].startswith("vxlan") for r in req["rewrites"])
    v1 = next(v for v in req["visits"] if v["where"] == "node/node-1")
    assert v1["route"]["route"] == "10.244.1.0/24 via 172.18.0.3 dev eth0"
    wire = req["hops"][4]["headers"]  # on the underlay: the pod addresses themselves, node MACs
    assert (wire["ip"]["src"], wire["ip"]["dst"]) == ("10.244.0.2", "10.244.1.2")


def test_legacy_backend_still_shows_the_path(emu_cluster, tmp_path):
    topo = tmp_path / "legacy.yaml"
    topo.write_text((TOPOLOGIES / "flannel-vxlan.yaml").read_text().replace(
        "    backend: vxlan\n", "    backend: vxlan\n  iptablesBackend: legacy\n"))
    with emu_cluster(str(topo)) as c:
        res = run.trace(clusters.open_cluster(c.name), "default/web-0", "default/web-1")
        assert res["ok"] and not res["rules_traced"]
        assert any("needs the nft iptables backend" in n for n in res["notes"])
        assert len(res["request"]["hops"]) == 12
