"""The Proxier seam: one row per kube-proxy mode (emu.addons.kubeproxy.modes, .proxiers), read by the cluster
preflight, the sync loop, `emu rules`, doctor, trace and flannel's node sysctls instead of branches on the mode.

Expectations are emu's own: each row holds what the code branched on before the seam (the log names are
cmd/kube-proxy/app/server_linux.go's "Using iptables proxy" / "Using nftables Proxier" / "Using ipvs Proxier"; the
ipvsadm text is the form `ipvsadm -S -n` prints)."""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from emu.addons.kubeproxy import iptables as ipt
from emu.addons.kubeproxy import iptables_text, ipvs_desired, modes, nftables_sync, proxiers
from emu.addons.kubeproxy import sync as kpsync
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort, SyncResult
from emu.errors import ClusterError
from emu.model.types import ProxyMode

IP = ipaddress.IPv4Address


def state(*svcs: tuple[ServicePort, tuple[Endpoint, ...]]) -> NodeProxyState:
    return NodeProxyState("node-1", (IP("172.18.0.2"),), ipaddress.IPv4Network("10.244.0.0/16"),
                          (ipaddress.IPv4Network("10.96.0.0/12"),), tuple(svcs))


WEB = (ServicePort("ns", "web", "", "TCP", IP("10.96.0.20"), 80), (Endpoint(IP("10.244.1.2"), 8080, "node-2"),))
DNS = (ServicePort("kube-system", "dns", "dns", "UDP", IP("10.96.0.10"), 53, session_affinity=True,
                   affinity_timeout=600),
       (Endpoint(IP("10.244.1.3"), 53, "node-1"), Endpoint(IP("10.244.2.3"), 53, "node-2")))


def test_every_mode_has_exactly_one_row_in_each_table():
    assert [m.mode for m in modes.MODES] == list(ProxyMode)
    assert [p.mode for p in proxiers.PROXIERS] == list(ProxyMode)
    for mode in ProxyMode:
        assert modes.for_mode(mode).mode is mode
        assert proxiers.for_mode(mode).spec is modes.for_mode(mode)


@pytest.mark.parametrize("mode, name, sysctls, log_table, partial", [
    (ProxyMode.IPTABLES, "iptables proxy", (("net.ipv4.conf.all.route_localnet", "1"),), "iptables", False),
    (ProxyMode.NFTABLES, "nftables Proxier", (), "nftables", True),
    (ProxyMode.IPVS, "ipvs Proxier", (), "iptables", False),
])
def test_names_sysctls_and_log_lines(mode, name, sysctls, log_table, partial):
    m = modes.for_mode(mode)
    assert (m.name, m.node_sysctls, m.log_table, m.partial_sync) == (name, sysctls, log_table, partial)


def test_rules_listing_and_doctor_columns():
    ipt_mode, nft_mode, ipvs_mode = modes.IPTABLES, modes.NFTABLES, modes.IPVS
    assert ipt_mode.rules("nft", None) == ("iptables-nft-save",)
    assert ipt_mode.rules("legacy", "nat") == ("iptables-legacy-save", "-t", "nat")
    assert ipvs_mode.rules("nft", "filter") == ("iptables-nft-save", "-t", "filter")
    assert nft_mode.rules("nft", "nat") == ("nft", "list", "ruleset")  # -t is iptables-save's
    assert ipt_mode.listing("legacy") == ("iptables-legacy-save",)
    assert nft_mode.listing("nft") == ("nft", "list", "table", "ip", "kube-proxy")
    assert ipt_mode.listing_what.format(backend="nft") == "the output of iptables-nft-save"
    assert nft_mode.listing_what.format(backend="nft") == "table ip kube-proxy"
    assert (ipt_mode.compared_as, nft_mode.compared_as, ipvs_mode.compared_as) == ("iptables-save", "nft", None)
    assert ipvs_mode.not_compared.startswith("ipvs mode: virtual servers and ipsets are not compared yet")


def test_trace_columns():
    assert [m.service_rules_in_iptables for m in modes.MODES] == [True, False, False]
    assert [m.nat_outside_netfilter for m in modes.MODES] == [False, False, True]


def test_iptables_render_is_the_first_sync():
    st = state(WEB, DNS)
    (load,) = modes.IPTABLES.render(st, "legacy")
    assert load.argv == ("iptables-legacy-restore", "--noflush", "-w")
    assert load.stdin == ipt.first_sync_jumps() + iptables_text.restore_text(st)


def test_nftables_render_is_one_transaction():
    st = state(WEB, DNS)
    assert modes.NFTABLES.render(st, "nft") == (modes.Load(("nft", "-f", "-"), nftables_sync.sync_text(st)),)


def test_ipvs_render_in_apply_order():
    st = state(WEB, DNS)
    want = ipvs_desired.desired(st)
    loads = modes.IPVS.render(st, "nft")
    assert [load.argv[0] for load in loads] == ["sysctl", "ip", "ipvsadm", "ipset", "iptables-nft-restore"]
    assert loads[0].argv[1:3] == ("-w", "net.ipv4.vs.conntrack=1")
    assert loads[3].stdin == ipvs_desired.ipset_restore_text(want)
    assert loads[4].stdin == want.jumps + want.iptables
    assert loads[1].stdin.splitlines() == ["link add kube-ipvs0 type dummy", "address add 10.96.0.10/32 dev kube-ipvs0",
                                           "address add 10.96.0.20/32 dev kube-ipvs0"]
    assert loads[2].stdin.splitlines() == [
        "-A -t 10.96.0.20:80 -s rr", "-a -t 10.96.0.20:80 -r 10.244.1.2:8080 -m -w 1",
        "-A -u 10.96.0.10:53 -s rr -p 600", "-a -u 10.96.0.10:53 -r 10.244.1.3:53 -m -w 1",
        "-a -u 10.96.0.10:53 -r 10.244.2.3:53 -m -w 1"]


def test_ipvs_preflight_needs_the_ipset_tool(monkeypatch):
    monkeypatch.setattr(proxiers.kernel, "require", lambda name, what: None)
    monkeypatch.setattr(proxiers.shutil, "which", lambda tool: None)
    with pytest.raises(ClusterError, match="kube-proxy ipvs mode needs the ipset tool"):
        proxiers.IPVS.preflight()
    proxiers.IPTABLES.preflight()  # nothing beyond what every cluster needs


def test_sync_loop_logs_with_the_proxier_s_names(monkeypatch, tmp_path):
    calls = []

    def sync(ns, st, first, backend, previous):
        calls.append((ns, st.node, first, backend, previous))
        return SyncResult(st.node, 0.001, 7)

    fake = dataclasses.replace(proxiers.NFTABLES, sync=sync)
    monkeypatch.setattr(proxiers, "PROXIERS", (proxiers.IPTABLES, fake, proxiers.IPVS))
    old, new = state(WEB), state(WEB, DNS)
    kpsync.sync_all([("c.node-1", new, None)], ProxyMode.NFTABLES, first=True, log_dir=str(tmp_path))
    monkeypatch.setattr(kpsync.tools, "run", lambda ns, argv, stdin=None: None)  # conntrack -D
    kpsync.sync_all([("c.node-1", new, old)], ProxyMode.NFTABLES, first=False, log_dir=str(tmp_path))
    assert calls == [("c.node-1", "node-1", True, "nft", None), ("c.node-1", "node-1", False, "nft", old)]
    lines = [line.split(" ", 1)[1] for line in (tmp_path / "node-1" / kpsync.LOG_FILE).read_text().splitlines()]
    assert lines[0] == '"Using nftables Proxier"'
    assert lines[1].startswith('"Reloading service nftables data" numServices=2 numEndpoints=3 sync="full" rules=7')
    assert 'sync="partial"' in lines[3]
