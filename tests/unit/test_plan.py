"""The plan, checked entry by entry against what flannel and the CNI bridge plugin program (no root needed).

Where the expectations come from: emu's own, written beside the planner from flannel's backend code, because
flannel has no backend tests to compare with: at flannel-io/flannel commit cdf760595c23292fd03ff4daf03638ac1ceef417
pkg/backend/vxlan holds only fuzz_test.go (FuzzParseVXLANConfig, which checks that config parsing does not crash) and
pkg/backend/hostgw no test at all.  The lines the plan copies, at that commit:
- vxlan.go:75 `defaultVNI = 1` and :205 the device name `flannel.<VNI>`; device.go:63 `MTU: devAttrs.MTU - 50`,
  :68-69 the VTEP port (0 = the kernel's 8472) and `Learning` (off by default); vxlan.go:258 the device address
  `lease.Subnet.IP/32`;
- vxlan_network.go:289-296 the route `<subnet> dev flannel.1 via <subnet>.0` with RTNH_F_ONLINK, added by
  RouteReplace (:381) only after AddARP (:357: device.go:231-239, a NUD_PERMANENT neighbour `<subnet>.0 lladdr
  <VTEP MAC>`) and AddFDB (:364: device.go:185-195, a NUD_PERMANENT AF_BRIDGE entry `<VTEP MAC> dst <public IP>`);
- hostgw.go:71-75 the host-gw route `<subnet> via <public IP>` on the external interface (full MTU, :60).
cni0 holding the first address of the node's subnet is the CNI bridge plugin's (isGateway).  They are believed
because tests/integration builds the same plan in real namespaces and pings across it, and `emu doctor` diffs the
plan against what the kernel reports.
"""
from __future__ import annotations

import ipaddress

import pytest

from emu.alloc import ipam
from emu.model import names
from emu.cluster import planner
from emu.plan import render

IP = ipaddress.ip_address
NET = ipaddress.ip_network


def build(backend: str = "vxlan", mtu: int = 1500):
    text = (f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: demo}}\n"
            f"spec: {{nodes: 3, mtu: {mtu}, cni: {{plugin: flannel, backend: {backend}}}}}\n")
    for i in range(3):
        text += f"---\nkind: Pod\nmetadata: {{name: web-{i}}}\nspec: {{containers: [{{name: c}}]}}\n"
    t = planner.load("t.yaml", text=text)
    return planner.build(t, ipam.allocate(t, ipam.Allocations.empty()))


def script(plan):
    """`emu up --dry-run` of a flannel plan: the cluster's namespaces, then each pod's veth and namespace."""
    return render.script(plan, [line for p in plan.pods for line in render.pod_commands(p)])


def subnet_env(info):
    return dict(info.files)["run/flannel/subnet.env"]


def node(plan, name):
    return next(n for n in plan.infra if n.role == "node" and n.owner == name)


def test_vxlan_device_as_flannel_creates_it():
    n1 = node(build(), "node-1")
    (vx,) = [link for link in n1.links if link.kind == "vxlan"]
    assert vx.name == "flannel.1" and vx.mtu == 1450
    assert (vx.vxlan.vni, vx.vxlan.port, str(vx.vxlan.local), vx.vxlan.dev, vx.vxlan.learning) == \
        (1, 8472, "172.18.0.2", "eth0", False)
    assert vx.mac == names.vtep_mac("demo", "node-1")
    assert int(vx.mac.split(":")[0], 16) & 0x03 == 0x02  # locally administered unicast
    assert {(a.dev, str(a.cidr)) for a in n1.addresses} == {
        ("eth0", "172.18.0.2/24"), ("flannel.1", "10.244.0.0/32"), ("cni0", "10.244.0.1/24")}


def test_vxlan_peers_neighbour_fdb_and_onlink_route_per_remote_node():
    n1 = node(build(), "node-1")
    mac2, mac3 = names.vtep_mac("demo", "node-2"), names.vtep_mac("demo", "node-3")
    assert [(n.dev, str(n.ip), n.lladdr) for n in n1.neighbours] == [
        ("flannel.1", "10.244.1.0", mac2), ("flannel.1", "10.244.2.0", mac3)]
    assert [(f.dev, f.lladdr, str(f.dst)) for f in n1.fdb] == [
        ("flannel.1", mac2, "172.18.0.3"), ("flannel.1", mac3, "172.18.0.4")]
    assert [(str(r.dst), r.dev, str(r.via), r.onlink) for r in n1.routes] == [
        ("0.0.0.0/0", "eth0", "172.18.0.1", False),
        ("10.244.1.0/24", "flannel.1", "10.244.1.0", True),
        ("10.244.2.0/24", "flannel.1", "10.244.2.0", True)]


def test_host_gw_routes_via_node_ips_and_full_mtu():
    plan = build("host-gw")
    n2 = node(plan, "node-2")
    assert not any(link.kind == "vxlan" for link in n2.links) and not n2.neighbours and not n2.fdb
    assert [(str(r.dst), r.dev, str(r.via), r.onlink) for r in n2.routes[1:]] == [
        ("10.244.0.0/24", "eth0", "172.18.0.2", False), ("10.244.2.0/24", "eth0", "172.18.0.4", False)]
    assert plan.pods[0].host_link.mtu == 1500 and plan.pods[0].host_link.peer_mtu == 1500


@pytest.mark.parametrize("backend, mtu, pod_mtu", [("vxlan", 1500, 1450), ("vxlan", 9000, 8950),
                                                   ("host-gw", 1400, 1400)])
def test_pod_mtu_is_what_flannel_hands_to_cni(backend, mtu, pod_mtu):
    plan = build(backend, mtu)
    assert {p.host_link.mtu for p in plan.pods} == {pod_mtu}
    assert f"FLANNEL_MTU={pod_mtu}\n" in subnet_env(plan.nodes[0])


def test_pod_side_as_the_bridge_plugin_wires_it():
    p = build().pods[1]
    assert p.node == "node-2" and str(p.ip) == "10.244.1.2"
    h = p.host_link
    assert h.name == names.host_veth("demo", "default", "web-1") and h.name.startswith("veth") and len(h.name) == 12
    assert (h.kind, h.master, h.hairpin, h.peer, h.peer_netns) == ("veth", "cni0", True, "eth0", "demo.default.web-1")
    assert [(a.dev, str(a.cidr)) for a in p.netns.addresses] == [("eth0", "10.244.1.2/24")]
    assert [(str(r.dst), str(r.via)) for r in p.netns.routes] == [("10.244.0.0/16", "10.244.1.1"),
                                                                   ("0.0.0.0/0", "10.244.1.1")]
    assert ("net.ipv4.conf.eth0.arp_notify", "1") in p.netns.sysctls


def test_flannel_masquerade_and_forward_rules():
    n2 = node(build(), "node-2")
    nat, filt = n2.iptables
    assert nat.name == "nat" and nat.chains == ("FLANNEL-POSTRTG",)
    q = '-m comment --comment "flanneld masq"'
    assert nat.rules == (
        f"-A POSTROUTING {q} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {q} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 {q} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 {q} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 {q} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 {q} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 {q} -j MASQUERADE --random-fully")
    assert filt.name == "filter" and filt.chains == ("FLANNEL-FWD",)
    assert filt.rules[0] == '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD'
    assert ("net.ipv4.ip_forward", "1") in n2.sysctls


def test_subnet_env_as_flanneld_writes_it():
    assert build().nodes[2].files == (("run/flannel/subnet.env", "FLANNEL_NETWORK=10.244.0.0/16\n"
                                       "FLANNEL_SUBNET=10.244.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"),)


def test_underlay_joins_every_node_and_the_external_host():
    plan = build()
    u = plan.infra[0]
    assert u.role == "underlay" and u.links[0].kind == "bridge"
    assert [(link.name, link.peer_netns) for link in u.links[1:]] == [
        ("to-node-1", "demo.node-1"), ("to-node-2", "demo.node-2"), ("to-node-3", "demo.node-3"),
        ("to-external", "demo.external")]
    assert plan.all_netns()[:5] == ["demo.underlay", "demo.external", "demo.node-1", "demo.node-2", "demo.node-3"]


def test_dry_run_script_reads_like_the_commands_a_person_would_type():
    s = script(build())
    assert "ip -n demo.node-1 link add flannel.1 address" in s
    assert "type vxlan id 1 local 172.18.0.2 dev eth0 dstport 8472 nolearning" in s
    assert "ip -n demo.node-1 route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink" in s
    assert "bridge -n demo.node-1 fdb append" in s and "dst 172.18.0.3 self permanent" in s
    assert "ip -n demo.default.web-0 route add default via 10.244.0.1 dev eth0" in s


def test_cni0_carries_a_fixed_address_so_it_never_follows_its_ports():
    """A bridge without a set address takes its lowest port MAC and changes as pods come and go; the bridge plugin
    pins it (ensureAddr), so the plan gives cni0 an explicit MAC: stable, per node, locally administered unicast."""
    plan = build()
    macs = {}
    for name in ("node-1", "node-2", "node-3"):
        (br,) = [link for link in node(plan, name).links if link.name == "cni0"]
        assert br.kind == "bridge" and br.mac is not None
        assert int(br.mac.split(":")[0], 16) & 0x03 == 0x02  # locally administered unicast
        macs[name] = br.mac
    assert len(set(macs.values())) == 3  # one per node
    assert node(build(), "node-2").links[-1].mac == macs["node-2"]  # the same on every build of the plan
    assert node(build("host-gw"), "node-2").links[-1].mac == macs["node-2"]  # the backend does not change it
    assert macs["node-1"] != names.vtep_mac("demo", "node-1")
    s = script(plan)
    assert f"ip -n demo.node-1 link add cni0 address {macs['node-1']} mtu 1450 type bridge" in s


def test_other_cluster_same_node_names_gets_another_cni0_address():
    other = planner.build(*_cluster("other"))
    mine = planner.build(*_cluster("demo"))
    assert node(other, "node-1").links[-1].mac != node(mine, "node-1").links[-1].mac


def _cluster(name: str):
    text = (f"apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec: {{nodes: 1}}\n"
            "---\nkind: Pod\nmetadata: {name: web-0}\nspec: {containers: [{name: c}]}\n")
    t = planner.load("t.yaml", text=text)
    return t, ipam.allocate(t, ipam.Allocations.empty())
