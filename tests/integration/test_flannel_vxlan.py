"""Flannel vxlan on real namespaces: the kernel holds exactly what flanneld and the bridge plugin program, and
packets behave as on a Flannel cluster (overlay, MTU edge, fragmentation, masquerade)."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest

from emu.apply import links as apply
from emu.network.flannel import nodes as flannel
from emu.model import names
from emu.apply import netns
from emu.observe import readback as observe


def ipj(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)


def test_every_namespace_matches_the_plan_entry_by_entry(vxlan):
    plan = vxlan.plan
    problems = {}
    with apply.Sockets() as s:
        for ns in plan.infra:
            problems[ns.name] = observe.diff(ns, observe.read(ns.name, s))
        for p in plan.pods:
            problems[p.netns.name] = observe.diff(p.netns, observe.read(p.netns.name, s))
            host = observe.read(p.node_netns, s)
            problems[p.node_netns + "/" + p.host_link.name] = observe._link_problems(
                p.host_link, host.links.get(p.host_link.name))
    assert {k: v for k, v in problems.items() if v} == {}


def test_flannel_1_as_iproute2_shows_it(vxlan):
    ns = vxlan.netns("node/node-1")
    (link,) = ipj("-n", ns, "-d", "link", "show", "flannel.1")
    data = link["linkinfo"]["info_data"]
    assert link["mtu"] == 1450 and link["address"] == names.vtep_mac(vxlan.name, "node-1")
    assert data["id"] == 1 and data["port"] == 8472 and data["local"] == "172.18.0.2" and data["link"] == "eth0"
    assert data.get("learning") is False
    (addr,) = [a for a in ipj("-n", ns, "addr", "show", "flannel.1")[0]["addr_info"] if a["family"] == "inet"]
    assert (addr["local"], addr["prefixlen"]) == ("10.244.0.0", 32)


def test_peer_neighbours_fdb_and_onlink_routes_as_iproute2_shows_them(vxlan):
    ns = vxlan.netns("node/node-1")
    neigh = {(n["dst"], n["lladdr"], tuple(n["state"])) for n in ipj("-n", ns, "neigh", "show", "dev", "flannel.1")}
    macs = {n: names.vtep_mac(vxlan.name, n) for n in ("node-2", "node-3")}
    assert neigh == {("10.244.1.0", macs["node-2"], ("PERMANENT",)), ("10.244.2.0", macs["node-3"], ("PERMANENT",))}
    fdb = json.loads(subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", "flannel.1"],
                                    capture_output=True, text=True, check=True).stdout)
    remote = {(f["mac"], f["dst"], f["state"]) for f in fdb if "dst" in f}
    assert remote == {(macs["node-2"], "172.18.0.3", "permanent"), (macs["node-3"], "172.18.0.4", "permanent")}
    routes = {r["dst"]: r for r in ipj("-n", ns, "route", "show", "dev", "flannel.1")}
    for dst, via in (("10.244.1.0/24", "10.244.1.0"), ("10.244.2.0/24", "10.244.2.0")):
        assert routes[dst]["gateway"] == via and "onlink" in routes[dst]["flags"]


def test_flannel_iptables_rules_as_iptables_save_prints_them(vxlan):
    ns = vxlan.netns("node/node-2")
    nat = [r for r in observe.iptables_rules(ns, "nat") if "FLANNEL" in r]  # kube-proxy's rules sit beside them
    filt = [r for r in observe.iptables_rules(ns, "filter") if "FLANNEL" in r]
    cl = vxlan.model.cluster
    subnet = vxlan.plan.nodes[1].subnet
    assert nat == list(flannel.masq_rules(cl, subnet))
    assert filt == list(flannel.forward_rules(cl))


def test_pod_interface_routes_and_mtu(vxlan):
    ns = vxlan.netns("default/web-1")
    (eth0,) = ipj("-n", ns, "addr", "show", "eth0")
    assert eth0["mtu"] == 1450 and eth0["operstate"] == "UP"
    inet = [a for a in eth0["addr_info"] if a["family"] == "inet"]
    assert [(a["local"], a["prefixlen"]) for a in inet] == [("10.244.1.2", 24)]
    routes = {r["dst"]: r.get("gateway") for r in ipj("-n", ns, "route")}
    assert routes == {"default": "10.244.1.1", "10.244.1.0/24": None, "10.244.0.0/16": "10.244.1.1"}
    host = names.host_veth(vxlan.name, "default", "web-1")
    (veth,) = ipj("-n", vxlan.netns("node/node-2"), "-d", "link", "show", host)
    assert veth["master"] == "cni0" and veth["mtu"] == 1450
    assert veth["linkinfo"]["info_slave_data"]["hairpin"] is True


def test_subnet_env_is_written_as_flanneld_writes_it(vxlan):
    import os
    from emu.apply import state
    path = os.path.join(state.cluster_dir(vxlan.name), "nodes/node-3/run/flannel/subnet.env")
    assert open(path).read() == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\n"
                                 "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("dst", ["default/web-1", "shop/cart-6d557d6b4f-p78r2"], ids=["cross-node", "same-node"])
def test_pod_to_pod_answers_with_the_real_client_ip(vxlan, proto, dst):
    r = vxlan.probe("default/web-0", dst, proto=proto, port=80)
    assert r["ok"], r
    assert r["answered_by"] == dst
    assert r["client_ip_seen"] == vxlan.pod_ip("default/web-0")


def test_port_81_is_served_too_and_a_closed_port_is_refused(vxlan):
    assert vxlan.probe("default/web-0", "default/web-2", port=81)["answered_by"] == "default/web-2"
    # nothing listens on 82: web-2's kernel answers the SYN with a RST, while the same pod serves 81
    vxlan.assert_blocked("default/web-0", "default/web-2", port=82, by="reset",
                         control=("default/web-0", "default/web-2", 81))


def test_pod_to_node_and_node_to_pod(vxlan):
    r = vxlan.probe("default/web-0", "node/node-2", proto="icmp")
    assert r["ok"] and r["answered_by"] == "node/node-2"
    # A node reaching a remote pod leaves through flannel.1 with that device's address as source; flannel's
    # POSTROUTING rules leave it alone (it is inside the cluster CIDR).
    r = vxlan.probe("node/node-1", "default/web-1", port=80)
    assert r["ok"] and r["client_ip_seen"] == "10.244.0.0"


def test_vxlan_mtu_edge_1422_passes_1423_is_refused_with_the_mtu(vxlan):
    ok = vxlan.probe("default/web-0", "default/web-1", proto="icmp", size=1422, df=True)
    assert ok["ok"] and ok["verdict"] == "connected"
    big = vxlan.probe("default/web-0", "default/web-1", proto="icmp", size=1423, df=True)
    assert not big["ok"] and big["verdict"] == "frag-needed"
    assert big["icmp"]["mtu"] == 1450 and big["icmp"]["sender"] == "local"


def test_path_mtu_across_the_overlay(vxlan):
    r = vxlan.pmtu("default/web-0", "default/web-2")
    assert r["path_mtu"] == 1450


def test_4000_byte_udp_without_df_crosses_fragmented_and_arrives_whole(vxlan):
    r = vxlan.probe("default/web-0", "default/web-1", proto="udp", port=80, size=4000)
    assert r["ok"] and r["bytes_answered"] == 4000


def test_pod_traffic_leaving_the_cluster_is_masqueraded_to_the_node_ip(vxlan):
    """FLANNEL-POSTRTG: -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE: the external host sees the node."""
    ext = names.external_netns(vxlan.name)
    srv = netns.socket_in(ext, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        srv.bind(("0.0.0.0", 9999))
        srv.settimeout(3)
        cli = netns.socket_in(vxlan.netns("default/web-1"), socket.AF_INET, socket.SOCK_DGRAM)
        with cli:
            cli.sendto(b"hello", ("172.18.0.1", 9999))
            data, (src_ip, _) = srv.recvfrom(100)
        assert data == b"hello" and src_ip == "172.18.0.3"  # node-2's IP, not the pod's 10.244.1.2
    finally:
        srv.close()


def test_matrix_every_pod_reaches_every_pod(vxlan):
    m = vxlan.matrix("tcp", 80)
    assert m["failures"] == 0 and m["probes"] == 36
    assert all(m["observed"][a][b] for a in m["pods"] for b in m["pods"])
