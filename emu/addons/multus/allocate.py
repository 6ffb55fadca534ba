"""Multus-style secondary networks, the allocation part: every pod's secondary interfaces get an address as the
NAD's IPAM plugin gives them: host-local over rangeStart..rangeEnd (round robin from the last reserved address, the
gateway skipped; plugins/ipam/host-local/backend/allocator) or static (plugins/ipam/static), and a requested `ips` or
`mac` as runtimeConfig when the NAD's config declares the capability.  Pure: the result is the allocations' record
(`Allocations.secondary`); emu.addons.multus.wire creates the interfaces from it."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from emu.errors import Problem, ValidationError
from emu.addons.multus.nad import NETWORKS_ANNOTATION, Nad, Request, resolve
from emu.network.cni import capabilities

LAYER = "alloc"

IPv4Address = ipaddress.IPv4Address
IPv4Interface = ipaddress.IPv4Interface


@dataclass(frozen=True, slots=True)
class Attachment:
    nad: str
    ifname: str
    ip: IPv4Address
    prefixlen: int
    mac: str | None = None  # built-in: the MAC asked for; CNI mode: the one the plugin reports
    gateway: IPv4Address | None = None  # the IPAM result's gateway: routes without their own gw go via it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nad": self.nad, "interface": self.ifname, "ip": str(self.ip),
                               "prefixLength": self.prefixlen}
        if self.mac:
            out["mac"] = self.mac
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Attachment":
        return cls(d["nad"], d["interface"], IPv4Address(d["ip"]), int(d["prefixLength"]), d.get("mac"),
                   IPv4Address(d["gateway"]) if d.get("gateway") else None)


# --- allocation (host-local over rangeStart..rangeEnd, or static) -------------------------------------------------


class _Refused(Exception):
    """What the IPAM plugin (or the kernel) would answer the ADD of one request with."""


class _Exhausted(_Refused):
    pass


def _next_free(nad: Nad, last: IPv4Address | None, used: dict[IPv4Address, str]) -> IPv4Address | None:
    assert nad.range_start is not None and nad.range_end is not None
    start, end = int(nad.range_start), int(nad.range_end)
    size = end - start + 1
    first = int(last) + 1 if last is not None and start <= int(last) <= end else start
    for k in range(size):
        cand = IPv4Address(start + (first - start + k) % size)
        if cand != nad.gateway and cand not in used:
            return cand
    return None


def _keeps(nad: Nad, a: Attachment, cni: bool) -> bool:
    """A running pod keeps its address (a sandbox is never re-wired); a built-in host-local one while the range
    still holds it.  In CNI mode the record holds what the plugin gave, whatever the IPAM."""
    if cni or nad.ipam == "static":
        return True
    assert nad.range_start is not None and nad.range_end is not None
    return nad.range_start <= a.ip <= nad.range_end


def _static(nad: Nad, r: Request, ips: list[str], mac: str | None, cni: bool) -> Attachment | None:
    """static: runtimeConfig ips replace ipam.addresses ("runtimeConfig IP overwrites IP"); CIDR notation only."""
    addrs: list[tuple[IPv4Interface, IPv4Address | None]] = []
    if ips:
        for text in ips:
            if "/" not in text:
                if cni:
                    continue
                raise _Refused(f"static: an entry in the 'ips' field is NOT in CIDR notation, got: "
                               f"'{text}'")
            cidr = ipaddress.ip_interface(text)
            if not isinstance(cidr, IPv4Interface):
                if cni:
                    continue
                raise _Refused(f"{text} is not IPv4: the built-in wiring gives secondary interfaces IPv4 addresses "
                               f"(real plugins take it with spec.cni.plugin: cni)")
            addrs.append((cidr, None))
    else:
        addrs = list(nad.addresses)
    if not addrs:
        if cni:
            return None  # the plugin answers; nothing to predict
        raise _Refused("static has no address to give (the macvlan plugin fails with \"IPAM plugin returned missing "
                       "IP config\"): set ipam.addresses, or ips in the selection element with the NAD's "
                       "capabilities {ips: true}")
    if len(addrs) > 1 and not cni:
        raise _Refused(f"{len(addrs)} addresses: the built-in wiring gives a secondary interface one address "
                       f"(real plugins take more with spec.cni.plugin: cni)")
    cidr, gw = addrs[0]
    return Attachment(nad.key, r.ifname, cidr.ip, cidr.network.prefixlen, mac, gw)


def _host_local(nad: Nad, r: Request, ips: list[str], mac: str | None, last: IPv4Address | None,
                used: dict[IPv4Address, str], cni: bool) -> Attachment | None:
    """host-local (allocator.Get): a requested address must be in the range, not the gateway and free; else the
    next free one, round robin from the last reserved.  host-local reads "a.b.c.d" and "a.b.c.d/nn" alike and
    gives the range's prefix length."""
    assert nad.subnet is not None
    want = None
    if ips:
        asked = [ipaddress.ip_interface(x).ip for x in ips]
        inside = [ip for ip in asked if isinstance(ip, IPv4Address) and nad.range_start <= ip <= nad.range_end]
        if cni:  # a prediction only: the plugin decides (and answers with its own error)
            want = next((ip for ip in inside if ip not in used and ip != nad.gateway), None)
        else:
            left = [str(ip) for ip in asked if not inside or ip != inside[0]]
            if left:
                raise _Refused(f"host-local: failed to allocate all requested IPs: {', '.join(left)} "
                               f"(range {nad.range_start}-{nad.range_end})")
            want = inside[0]
            if want == nad.gateway:
                raise _Refused(f"host-local: requested ip {want} is subnet's gateway")
            if want in used:
                raise _Refused(f"host-local: requested IP address {want} is not available in range set "
                               f"{nad.range_start}-{nad.range_end} (pod {used[want]} holds it)")
    ip = want if want is not None else _next_free(nad, last, used)
    if ip is None:
        raise _Exhausted(f"its range {nad.range_start}-{nad.range_end} has no free address")
    return Attachment(nad.key, r.ifname, ip, nad.subnet.prefixlen, mac, nad.gateway)


def _mac_for_kernel(mac: str) -> str:
    raw = capabilities.parse_mac(mac)
    assert raw is not None
    if len(raw) != 6:
        raise _Refused(f"mac {mac} is not a 48-bit Ethernet address (the kernel refuses it for a macvlan)")
    if raw[0] & 1:
        raise _Refused(f"mac {mac} is a multicast address (the kernel refuses it for an interface)")
    return ":".join(f"{b:02x}" for b in raw)


def allocate(topo: Any, previous: dict[str, Any]) -> dict[str, Any]:
    """{"pods": {pod: [attachment json]}, "lastReserved": {nad: ip}}: pods keep theirs, new ones get the address
    their IPAM gives, in document order; what the plugin would refuse (an exhausted range, a requested address
    outside it or held by another pod, static without an address) is a validation error naming the pod and the
    NAD.  In CNI mode the addresses are a prediction that the plugins' results replace, and their refusals are
    left to the plugins."""
    problems = capabilities.builtin_problems(topo)  # the one place that sees the pods and the cluster's mode
    cni = topo.cluster.cni.plugin == "cni"
    nads = {n.key: n for n in getattr(topo, "attachments", ())}
    prev_pods = previous.get("pods", {}) if previous else {}
    last = {k: IPv4Address(v) for k, v in (previous or {}).get("lastReserved", {}).items()}
    out: dict[str, list[Attachment]] = {}
    used: dict[str, dict[IPv4Address, str]] = {k: {} for k in nads}
    todo = []
    for p in topo.pods:
        reqs = [] if p.host_network else resolve(p.namespace, p.annotations.get(NETWORKS_ANNOTATION))
        if not reqs:
            continue
        old = [Attachment.from_json(a) for a in prev_pods.get(p.key, [])]
        if [(a.nad, a.ifname) for a in old] == [(r.nad, r.ifname) for r in reqs] and all(
                a.nad in nads and _keeps(nads[a.nad], a, cni) for a in old):
            out[p.key] = old
            for a in old:
                used[a.nad][a.ip] = p.key
        else:
            todo.append((p, reqs))
    for p, reqs in todo:
        got = []
        for r in reqs:
            nad = nads[r.nad]
            # libcni hands the delegate runtimeConfig.ips / .mac only when its config declares the capability
            ips = list(r.ips) if "ips" in nad.capabilities else []
            mac = r.mac if "mac" in nad.capabilities else None
            try:
                if mac and not cni:
                    mac = _mac_for_kernel(mac)
                if nad.ipam == "static":
                    a = _static(nad, r, ips, mac, cni)
                else:
                    a = _host_local(nad, r, ips, mac, last.get(r.nad), used[r.nad], cni)
                    assert a is not None
                    used[r.nad][a.ip] = p.key
                    last[r.nad] = a.ip  # host-local's store.Reserve writes last_reserved_ip, asked for or not
            except _Refused as e:
                fld = ("spec.template." if p.owner else "") + f"metadata.annotations[{NETWORKS_ANNOTATION}]"
                what = "is exhausted" if isinstance(e, _Exhausted) else f"refuses {r.ifname}"
                problems.append(Problem(topo.file, p.document, f"Pod {p.key}", fld,
                                        f"NetworkAttachmentDefinition {r.nad} {what}: {e}"))
                break
            if a is not None:
                got.append(a)
        out[p.key] = got
    if problems:
        raise ValidationError(problems)
    order = [p.key for p in topo.pods if p.key in out]
    return {"pods": {k: [a.to_json() for a in out[k]] for k in order},
            "lastReserved": {k: str(v) for k, v in last.items()}}


def attachments(secondary: dict[str, Any], pod_key: str) -> list[Attachment]:
    return [Attachment.from_json(a) for a in (secondary or {}).get("pods", {}).get(pod_key, [])]
