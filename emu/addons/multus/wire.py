"""Multus-style secondary networks, the wiring part.  Built-in mode: a macvlan over the node namespace's `master`,
created straight into the pod's namespace (IFLA_LINK = master, IFLA_NET_NS_FD = the pod's namespace, one
RTM_NEWLINK), with the address emu.addons.multus.allocate gave it and `arp_notify=1`, as the macvlan plugin sets it;
a requested MAC (runtimeConfig.mac) is the link's address at creation.  CNI mode (cni.plugin: cni): the real plugin
from binDir runs each secondary network, as Multus delegates it."""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from typing import Any, Iterable

from pyroute2 import IPRoute

from emu.apply import netns
from emu.errors import Problem, ValidationError
from emu.addons.multus.allocate import Attachment, attachments
from emu.addons.multus.nad import NETWORKS_ANNOTATION, resolve
from emu.network.cni import capabilities
from emu.network.cni import config as cni_config
from emu.network.cni.netconf import NetConfList

IPv4Interface = ipaddress.IPv4Interface


# --- wiring (built-in mode) -----------------------------------------------------------------------------------------


def wire(topo: Any, secondary: dict[str, Any], pods: Iterable[Any]) -> None:
    """Create each pod's macvlans from its node's namespace straight into the pod's, then address them."""
    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    for pp in pods:
        atts = attachments(secondary, pp.key)
        if not atts:
            continue
        node_ns, pod_ns = pp.node_netns, pp.netns.name
        fd = os.open(netns.path(pod_ns), os.O_RDONLY)
        node = IPRoute(use_socket=netns.socket_in(node_ns, socket.AF_NETLINK, socket.SOCK_DGRAM, 0), groups=0)
        try:
            for a in atts:
                nad = nads[a.nad]
                master = node.link_lookup(ifname=nad.master)
                if not master:
                    raise ValidationError([Problem(topo.file, None, f"NetworkAttachmentDefinition {a.nad}",
                                                   "spec.config.master",
                                                   f"node namespace {node_ns} has no interface {nad.master}")])
                kw: dict[str, Any] = {"ifname": a.ifname, "kind": "macvlan", "link": master[0],
                                      "macvlan_mode": nad.mode, "net_ns_fd": fd}
                if nad.mtu:
                    kw["mtu"] = nad.mtu
                if a.mac:  # runtimeConfig.mac: the macvlan plugin sets it as the link's address at creation
                    kw["address"] = a.mac
                node.link("add", **kw)  # one RTM_NEWLINK: it never lives in the node namespace
        finally:
            node.close()
            os.close(fd)

        def inside(atts: list[Attachment] = atts) -> None:
            for a in atts:
                with open(f"/proc/sys/net/ipv4/conf/{a.ifname}/arp_notify", "w") as f:
                    f.write("1")
            with IPRoute() as ipr:
                for a in atts:
                    idx = ipr.link_lookup(ifname=a.ifname)[0]
                    ipr.addr("add", index=idx, address=str(a.ip), prefixlen=a.prefixlen)
                    ipr.link("set", index=idx, state="up")
                    for dst, gw in nads[a.nad].routes:
                        via = gw or a.gateway  # ipam.ConfigureIface: a route without gw goes via the IP's gateway
                        rkw: dict[str, Any] = {"dst": str(dst), "oif": idx}
                        if via is not None:
                            rkw["gateway"] = str(via)
                        ipr.route("add", **rkw)

        netns.run_in(pod_ns, inside)


# --- CNI mode (cni.plugin: cni): the real plugin from binDir runs each secondary network -----------------------------


def cni_networks(topo: Any, pod: Any, data_dir: str, state_dir: str | None = None, primary: Any = None,
                 pod_args: dict[str, Any] | None = None) -> list[tuple[Any, str, str, dict[str, Any]]]:
    """(network config list, ifname, NAD key, capability args) per secondary network of `pod`, as Multus delegates
    them: the NAD's config (named after the NAD when it has no name), host-local and tuning keeping their state in
    the node's own directories, and the runtimeConfig Multus offers the delegate (capabilities.multus_args: what the
    runtime gave Multus for the `primary` network list, then the selection element's ips and mac)."""
    if pod is None or pod.host_network:
        return []
    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    out = []
    for r in resolve(pod.namespace, pod.annotations.get(NETWORKS_ANNOTATION)):
        conf = cni_config.node_local(json.loads(nads[r.nad].config), data_dir, state_dir)
        conf.setdefault("name", nads[r.nad].name)
        conf.setdefault("cniVersion", "0.3.1")
        offers = capabilities.multus_args(primary, pod_args or {}, r.ips, r.mac)
        out.append((NetConfList.from_dict(conf), r.ifname, r.nad, offers))
    return out


def record_cni(secondary: dict[str, Any], key: str, got: list[tuple[str, ...]]) -> dict[str, Any]:
    """The allocations' secondary record with the addresses the plugins gave `key` ((nad, ifname, cidr[, mac])
    each)."""
    pods = dict((secondary or {}).get("pods", {}))
    pods[key] = [Attachment(g[0], g[1], IPv4Interface(g[2]).ip, IPv4Interface(g[2]).network.prefixlen,
                            g[3] if len(g) > 3 and g[3] else None).to_json() for g in got]
    return {**(secondary or {}), "pods": pods}
