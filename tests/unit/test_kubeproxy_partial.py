"""nftables partial sync: unchanged service ports keep their chains; their map elements are re-added.

Expectations are emu's own, from the behaviour of kubernetes/kubernetes pkg/proxy/nftables/proxier.go syncProxyRules
(a partial sync rewrites only changed services' chains, re-adds every map element); upstream's counterpart is
TestSyncProxyRulesRepeated, which test_kubeproxy_nftables.py compares against verbatim (kubernetes/kubernetes
@81810de635aa13aa0a32992f6def3aa9d6025ebc, pinned there)."""
from __future__ import annotations

import ipaddress

from emu.addons.kubeproxy import nftables as nft
from emu.addons.kubeproxy import nftables_sync as nft_sync
from emu.addons.kubeproxy.model import Endpoint, NodeProxyState, ServicePort

IP = ipaddress.IPv4Address


def state(*svcs):
    return NodeProxyState("node-1", (IP("172.18.0.2"),), ipaddress.IPv4Network("10.244.0.0/16"),
                          (ipaddress.IPv4Network("10.96.0.0/12"),), tuple(svcs))


A = (ServicePort("ns", "a", "", "TCP", IP("10.96.0.20"), 80), (Endpoint(IP("10.244.1.2"), 80, "node-2"),))
B = (ServicePort("ns", "b", "", "TCP", IP("10.96.0.21"), 80), (Endpoint(IP("10.244.1.3"), 80, "node-2"),))
B2 = (B[0], (Endpoint(IP("10.244.1.4"), 80, "node-2"),))


def test_only_changed_services_are_rewritten():
    old, new = state(A, B), state(A, B2)
    text = nft_sync.sync_text(new, nft_sync.managed_names(old), first_sync=False, previous=old)
    a_chain, b_chain = nft.service_chain(A[0]), nft.service_chain(B[0])
    assert f"flush chain ip kube-proxy {a_chain}" not in text  # A unchanged: chain left as is
    assert f"flush chain ip kube-proxy {b_chain}" in text  # B's endpoints changed
    assert f"goto {a_chain}" in text  # but A's map element is re-added after the map flush
    assert f"delete chain ip kube-proxy {nft.endpoint_chain(B[0], B[1][0])}" in text  # stale endpoint chain
    assert nft_sync.managed_names(new) == (nft_sync.managed_names(old) - {nft.endpoint_chain(B[0], B[1][0])}) | {
        nft.endpoint_chain(B2[0], B2[1][0])}


def test_without_previous_everything_is_rewritten():
    text = nft_sync.sync_text(state(A, B), set(), first_sync=False)
    assert f"flush chain ip kube-proxy {nft.service_chain(A[0])}" in text
