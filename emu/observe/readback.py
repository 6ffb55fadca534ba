"""Observe: read a namespace's kernel state back into plan objects, and diff desired against observed.

The diff is the test oracle for `apply` and, later, a debugging tool (`emu doctor`): an entry the plan wants that
the kernel lacks is `missing`, one that differs is `wrong`.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emu.apply import tools
from emu.apply.links import Sockets
from emu.plan.objects import Address, Fdb, Link, Neighbour, NetnsPlan, Route

NUD_PERMANENT = 0x80
RTPROT_KERNEL = 2
RT_TABLE_MAIN = 254


@dataclass(frozen=True, slots=True)
class ObservedLink:
    name: str
    kind: str | None
    mtu: int
    mac: str
    up: bool
    master: str | None
    hairpin: bool | None
    vxlan: tuple[int, int, str, str | None, bool] | None  # vni, port, local, dev, learning


@dataclass(frozen=True, slots=True)
class Observed:
    links: dict[str, ObservedLink]
    addresses: frozenset[Address]
    routes: frozenset[Route]  # main table, not the kernel's own prefix routes
    neighbours: frozenset[Neighbour]  # permanent ones
    fdb: frozenset[Fdb]  # permanent entries with a remote dst


def read(ns: str, s: Sockets) -> Observed:
    ipr = s.ipr(ns)
    raw = list(ipr.get_links())
    by_index = {int(m["index"]): m.get("IFLA_IFNAME") for m in raw}
    links = {}
    for m in raw:
        info = m.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info else None
        vx = None
        if kind == "vxlan":
            d = info.get("IFLA_INFO_DATA")
            vx = (d.get("IFLA_VXLAN_ID"), d.get("IFLA_VXLAN_PORT"), d.get("IFLA_VXLAN_LOCAL"),
                  by_index.get(d.get("IFLA_VXLAN_LINK")), bool(d.get("IFLA_VXLAN_LEARNING")))
        hairpin = None
        if info and info.get("IFLA_INFO_SLAVE_KIND") == "bridge":
            hairpin = bool(info.get("IFLA_INFO_SLAVE_DATA").get("IFLA_BRPORT_MODE"))
        name = m.get("IFLA_IFNAME")
        links[name] = ObservedLink(name, kind, m.get("IFLA_MTU"), m.get("IFLA_ADDRESS"), bool(m["flags"] & 1),
                                   by_index.get(m.get("IFLA_MASTER")), hairpin, vx)
    addrs = frozenset(Address(by_index[int(a["index"])],
                              ipaddress.IPv4Interface(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"))
                      for a in ipr.get_addr(family=2) if by_index.get(int(a["index"])) != "lo")
    routes = set()
    for r in ipr.get_routes(family=2, table=RT_TABLE_MAIN):
        if r["proto"] == RTPROT_KERNEL:
            continue
        dst = ipaddress.IPv4Network(f"{r.get('RTA_DST') or '0.0.0.0'}/{r['dst_len']}")
        gw = r.get("RTA_GATEWAY")
        mp = r.get("RTA_MULTIPATH")
        if mp:
            hops = tuple(ipaddress.IPv4Address(h.get("RTA_GATEWAY")) for h in mp)
            routes.add(Route(dst, by_index.get(mp[0]["oif"], "?"), None, False, hops))
            continue
        routes.add(Route(dst, by_index.get(r.get("RTA_OIF"), "?"), ipaddress.IPv4Address(gw) if gw else None,
                         bool(r["flags"] & 4)))
    neigh = frozenset(Neighbour(by_index[int(n["ifindex"])], ipaddress.IPv4Address(n.get("NDA_DST")),
                                n.get("NDA_LLADDR")) for n in ipr.get_neighbours(family=2)
                      if n["state"] & NUD_PERMANENT)
    fdb = frozenset(Fdb(by_index[int(f["ifindex"])], f.get("NDA_LLADDR"), ipaddress.IPv4Address(f.get("NDA_DST")))
                    for f in ipr.fdb("dump") if f.get("NDA_DST") and f["state"] & NUD_PERMANENT)
    return Observed(links, addrs, frozenset(routes), neigh, fdb)


def iptables_rules(ns: str, table: str, save: str = "iptables-save") -> list[str]:
    """`iptables-save -t TABLE` inside the namespace, as rule lines ('-A ...')."""
    out = tools.run(ns, [save, "-t", table])
    return [line for line in out.stdout.splitlines() if line.startswith("-A ")]


def _link_problems(want: Link, got: ObservedLink | None) -> list[str]:
    if got is None:
        return [f"missing link {want.name}"]
    out = []
    if want.kind != got.kind:
        out.append(f"link {want.name}: kind {got.kind}, want {want.kind}")
    if want.mtu and want.mtu != got.mtu:
        out.append(f"link {want.name}: mtu {got.mtu}, want {want.mtu}")
    if want.master and want.master != got.master:
        out.append(f"link {want.name}: master {got.master}, want {want.master}")
    if want.mac and want.mac != got.mac:
        out.append(f"link {want.name}: mac {got.mac}, want {want.mac}")
    if want.hairpin and not got.hairpin:
        out.append(f"link {want.name}: hairpin off")
    if want.vxlan:
        v = want.vxlan
        exp = (v.vni, v.port, str(v.local), v.dev, v.learning)
        if got.vxlan != exp:
            out.append(f"link {want.name}: vxlan {got.vxlan}, want {exp}")
    return out


def diff(want: NetnsPlan, got: Observed, extra_links: tuple[Link, ...] = ()) -> list[str]:
    """Every way the kernel differs from the plan, one line each; empty when they agree."""
    out = []
    for link in (*want.links, *extra_links):
        out += _link_problems(link, got.links.get(link.name))
    for dev, mtu in want.mtu:
        if dev in got.links and got.links[dev].mtu != mtu:
            out.append(f"link {dev}: mtu {got.links[dev].mtu}, want {mtu}")
    for dev in want.up:
        if dev not in got.links or not got.links[dev].up:
            out.append(f"link {dev} is not up")
    for kind, wanted, have in (("address", want.addresses, got.addresses), ("route", want.routes, got.routes),
                               ("neighbour", want.neighbours, got.neighbours), ("fdb entry", want.fdb, got.fdb)):
        out += [f"missing {kind} {x}" for x in wanted if x not in have]
        out += [f"unexpected {kind} {x}" for x in have if x not in set(wanted)]
    return out
