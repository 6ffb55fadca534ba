"""Routing decisions, asked of the kernel: `ip route get DST from SRC iif IFACE` in a namespace, and the routing
table entry it used, printed the way `ip route` prints it.

With `iif` the kernel runs the input path (ip_route_input): forwarding, the reverse-path filter (rp_filter answers
EXDEV) and the absence of a route (ENETUNREACH) show up exactly as the packet met them.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from emu.apply.links import Sockets

RTN_LOCAL, RTN_UNREACHABLE, RTN_BLACKHOLE, RTN_PROHIBIT = 2, 7, 6, 8
RTNH_F_ONLINK = 4
RTM_F_CLONED = 0x200
ROUTE_ERRORS = {errno.ENETUNREACH: "no route to the destination (ENETUNREACH)",
                errno.EHOSTUNREACH: "host unreachable (EHOSTUNREACH: forwarding is off here, or the route is "
                                    "unreachable)",
                errno.EXDEV: "reverse-path filter (rp_filter) rejects the source on this interface (EXDEV)",
                errno.EINVAL: "invalid source address for this interface (EINVAL: martian source)",
                errno.EACCES: "prohibited by a routing rule (EACCES)"}


@dataclass(frozen=True, slots=True)
class Decision:
    dst: str
    src: str | None
    iif: str | None
    ok: bool
    route: str | None = None  # the table entry, as `ip route` prints it
    dev: str | None = None
    via: str | None = None
    local: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"dst": self.dst, "src": self.src, "iif": self.iif, "ok": self.ok, "route": self.route,
                "dev": self.dev, "via": self.via, "local": self.local, "error": self.error}


def route_text(r: dict[str, Any], names: dict[int, str]) -> str:
    """One routing table entry as `ip route` prints it: `10.244.1.0/24 via 172.18.0.3 dev eth0 onlink`."""
    dst = r.get("RTA_DST")
    text = "default" if dst is None else f"{dst}/{r['dst_len']}"
    if r.get("type") == RTN_LOCAL:
        text = f"local {text}"
    gw = r.get("RTA_GATEWAY")
    if gw:
        text += f" via {gw}"
    oif = r.get("RTA_OIF")
    if oif:
        text += f" dev {names.get(oif, oif)}"
    for nh in r.get("RTA_MULTIPATH") or []:  # ECMP: one nexthop per gateway
        hop_gw = nh.get("RTA_GATEWAY")
        text += f" nexthop via {hop_gw}" if hop_gw else " nexthop"
        text += f" dev {names.get(nh['oif'], nh['oif'])}" if nh.get("oif") else ""
    if r.get("scope") == 253:
        text += " proto kernel scope link" if r.get("proto") == 2 else " scope link"
    if r.get("flags", 0) & RTNH_F_ONLINK:
        text += " onlink"
    return text


def _best(routes: list[dict[str, Any]], dst: str, oif: int | None, gw: str | None) -> dict[str, Any] | None:
    """The longest-prefix entry covering dst that agrees with the kernel's answer (device and gateway)."""
    addr = ipaddress.IPv4Address(dst)
    best = None
    for r in routes:
        net = ipaddress.IPv4Network(f"{r.get('RTA_DST') or '0.0.0.0'}/{r['dst_len']}", strict=False)
        if addr not in net:
            continue
        if oif is not None and r.get("RTA_OIF") not in (None, oif):
            continue
        if gw is not None and r.get("RTA_GATEWAY") not in (None, gw):
            continue
        if best is None or r["dst_len"] > best["dst_len"]:
            best = r
    return best


class Router:
    """Route look-ups in many namespaces; netlink sockets opened on first use, closed by `close()`."""

    def __init__(self) -> None:
        self._s = Sockets()
        self._names: dict[str, dict[int, str]] = {}
        self._routes: dict[str, list[dict[str, Any]]] = {}

    def close(self) -> None:
        self._s.close()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self, ns: str) -> dict[int, str]:
        if ns not in self._names:
            self._names[ns] = {int(m["index"]): m.get("IFLA_IFNAME") for m in self._s.ipr(ns).get_links()}
        return self._names[ns]

    def get(self, ns: str, dst: str, src: str | None = None, iif: str | None = None) -> Decision:
        ipr = self._s.ipr(ns)
        names = self.names(ns)
        index = {v: k for k, v in names.items()}
        args: dict[str, Any] = {"dst": dst}
        if iif is not None and iif in index and src is not None:
            args.update(iif=index[iif], src=src)
        try:
            got = ipr.route("get", **args)[0]
        except NetlinkError as e:
            return Decision(dst, src, iif, False, error=ROUTE_ERRORS.get(e.code, os.strerror(e.code)))
        rtype = got.get("type")
        oif, gw = got.get("RTA_OIF"), got.get("RTA_GATEWAY")
        if rtype in (RTN_UNREACHABLE, RTN_BLACKHOLE, RTN_PROHIBIT):
            return Decision(dst, src, iif, False, error=f"route type {rtype} (unreachable/blackhole/prohibit)")
        if rtype == RTN_LOCAL:
            return Decision(dst, src, iif, True, route=f"local {dst} (delivered to this namespace)",
                            dev=names.get(oif), local=True)
        # the table's own entries, not the cached exceptions (learned path MTUs, redirects: RTM_F_CLONED)
        if ns not in self._routes:
            self._routes[ns] = [r for r in ipr.get_routes(family=socket.AF_INET, table=254)
                                if not r["flags"] & RTM_F_CLONED]
        entries = self._routes[ns]
        best = _best(entries, dst, oif, gw)
        text = route_text(best, names) if best else f"{dst} dev {names.get(oif, oif)}"
        return Decision(dst, src, iif, True, route=text, dev=names.get(oif), via=gw)
