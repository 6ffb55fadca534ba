"""The cluster's components, in the order `up` starts them (and `down` stops them in reverse): one literal tuple.

Adding a component is its folder under emu/addons/ (an `Addon` in its hooks module: emu.addons.base) and one entry
here.  Multus first (its attachments are made with the pods), then kube-proxy (Services), kube-router's policy
controller (NetworkPolicy), CoreDNS, and the ingress controller last (its nginx proxies to the Services' endpoints
and is waited for once every other component is in place).
"""
from __future__ import annotations

from emu.addons.base import Addon
from emu.addons.dns.hooks import DNS
from emu.addons.ingress.hooks import INGRESS
from emu.addons.kubeproxy.hooks import KUBE_PROXY
from emu.addons.multus.hooks import MULTUS
from emu.addons.netpol.hooks import NETWORK_POLICY

ADDONS: tuple[Addon, ...] = (MULTUS, KUBE_PROXY, NETWORK_POLICY, DNS, INGRESS)


def named(name: str) -> Addon:
    return next(a for a in ADDONS if a.name == name)
