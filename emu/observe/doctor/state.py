"""Check `routes`: every namespace's links, addresses, routes, permanent neighbours and FDB entries as the plan
has them, against what the kernel reports (emu.observe.readback reads it back into plan objects).  Pure.

An entry the plan wants that the kernel lacks is *missing*, one the kernel holds differently (same route
destination, same neighbour address, same FDB MAC) is *wrong*: both fail, as they break traffic.  An entry the
kernel holds on one of the plan's interfaces that the plan does not have is *unexpected*: a warning (someone
added it; it may shadow the planned one).  Interfaces the plan does not know (a secondary network's net1,
kube-ipvs0) are not looked at.  MTUs are the `mtu` check's business."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from emu.observe.readback import Observed
from emu.plan.objects import Address, ClusterPlan, Fdb, Link, Neighbour, NetnsPlan, Route
from emu.observe.doctor import findings as f
from emu.observe.doctor.findings import Finding

CHECK = "routes"


def route_text(r: Route) -> str:
    """A route as `ip route` prints it."""
    dst = "default" if r.dst.prefixlen == 0 else str(r.dst)
    if r.nexthops:
        return f"{dst} dev {r.dev} " + " ".join(f"nexthop via {h}" for h in r.nexthops)
    words = [dst] + (["via", str(r.via)] if r.via else []) + ["dev", r.dev] + (["onlink"] if r.onlink else [])
    return " ".join(words)


def neighbour_text(n: Neighbour) -> str:
    return f"{n.ip} dev {n.dev} lladdr {n.lladdr} PERMANENT"


def fdb_text(e: Fdb) -> str:
    return f"{e.lladdr} dev {e.dev} dst {e.dst} self permanent"


def address_text(a: Address) -> str:
    return f"{a.cidr} dev {a.dev}"


def planned_route(ns: NetnsPlan, ip: str) -> Route | None:
    """The plan's route for `ip` in the namespace: the longest prefix that contains it."""
    addr = ipaddress.IPv4Address(ip)
    hits = [r for r in ns.routes if addr in r.dst]
    return max(hits, key=lambda r: r.dst.prefixlen, default=None)


def route_matches(want: Route, got: str | None) -> bool:
    """Whether `ip route get` output (`10.244.1.2 via 10.244.1.0 dev flannel.1 src ...`) took the planned route's
    gateway and device."""
    words = (got or "").split()

    def after(key: str) -> str | None:
        return words[words.index(key) + 1] if key in words[:-1] else None

    if len(want.nexthops) > 1:
        return after("dev") == want.dev
    if want.nexthops:
        return after("dev") == want.dev and after("via") == str(want.nexthops[0])
    return after("dev") == want.dev and after("via") == (str(want.via) if want.via else None)


def subject(ns: NetnsPlan) -> str:
    """How findings name a namespace: node/NAME, NS/POD, underlay, external."""
    return f"node/{ns.owner}" if ns.role == "node" else ns.owner


@dataclass(frozen=True, slots=True)
class Want:
    """What one namespace must hold: its plan, plus the host ends of its pods' veths (a node's) with the pod each
    belongs to."""

    plan: NetnsPlan
    host_links: tuple[tuple[Link, str], ...] = ()
    strict: bool = True  # report unexpected entries (off where the pods are not the plan's: cni.plugin cni)

    @property
    def links(self) -> tuple[Link, ...]:
        return (*self.plan.links, *(link for link, _ in self.host_links))

    def devices(self) -> set[str]:
        """Every interface name the plan gives this namespace (created here, or arriving as a veth peer)."""
        return {link.name for link in self.links} | set(self.plan.up) | {d for d, _ in self.plan.mtu}


def wants(plan: ClusterPlan, pods_planned: bool = True) -> list[Want]:
    """One Want per namespace emu made: the infrastructure, then every pod with a namespace of its own.  Where the
    pods are not the plan's (`cni.plugin: cni`: the plugins wire them and choose their interfaces), pods are left
    out and nodes are held only to what the plan puts there."""
    host: dict[str, list[tuple[Link, str]]] = {}
    for p in plan.pods:
        if not p.host_network and pods_planned:
            host.setdefault(p.node_netns, []).append((p.host_link, p.key))
    out = [Want(ns, tuple(host.get(ns.name, ())), strict=pods_planned) for ns in plan.infra]
    if pods_planned:
        out += [Want(p.netns) for p in plan.pods if not p.host_network]
    return out


def _link_problems(link: Link, got: Observed, owner: str | None) -> list[str]:
    name = link.name + (f" (host end of {owner})" if owner else "")
    o = got.links.get(link.name)
    if o is None:
        return [f"missing link {name}: {link.kind}" + (f" master {link.master}" if link.master else "")]
    out = []
    if link.kind != o.kind:
        out.append(f"wrong link {name}: kind {o.kind}, planned {link.kind}")
    if link.master and link.master != o.master:
        out.append(f"wrong link {name}: master {o.master or 'none'}, planned {link.master}")
    if link.mac and link.mac != o.mac:
        out.append(f"wrong link {name}: address {o.mac}, planned {link.mac}")
    if link.hairpin and not o.hairpin:
        out.append(f"wrong link {name}: hairpin off, planned on")
    if link.vxlan:
        v = link.vxlan
        want = (v.vni, v.port, str(v.local), v.dev, v.learning)
        if o.vxlan != want:
            out.append(f"wrong link {name}: vxlan (id, dstport, local, dev, learning) {o.vxlan}, planned {want}")
    return out


def _route_key(r: Route) -> tuple[object, ...]:
    """What makes two routes the same: ECMP next hops in any order; one next hop is a plain gateway (the kernel
    stores a one-hop multipath route as `via`)."""
    hops = tuple(sorted(r.nexthops))
    if len(hops) == 1:
        return (r.dst, r.dev, hops[0], r.onlink, ())
    return (r.dst, r.dev, r.via, r.onlink, hops)


def _routes(want: Iterable[Route], got: Iterable[Route], devices: set[str], strict: bool) -> list[str]:
    have = {_route_key(r): r for r in got}
    planned = {_route_key(r) for r in want}
    by_dst: dict[object, list[Route]] = {}
    for r in have.values():
        by_dst.setdefault(r.dst, []).append(r)
    out, explained = [], set()
    for r in want:
        if _route_key(r) in have:
            continue
        other = [x for x in by_dst.get(r.dst, []) if _route_key(x) not in planned]
        if other:
            explained.update(_route_key(x) for x in other)
            out.append(f"wrong route: {route_text(other[0])}, planned {route_text(r)}")
        else:
            out.append(f"missing route: {route_text(r)}")
    if strict:
        out += [f"unexpected route: {route_text(r)}" for k, r in sorted(have.items(), key=lambda kv: str(kv[1].dst))
                if k not in planned and k not in explained and r.dev in devices]
    return out


def _keyed(kind: str, want: Iterable[object], got: Iterable[object], key, text, devices: set[str],
           strict: bool) -> list[str]:
    have = {key(x): x for x in got}
    planned = {key(x): x for x in want}
    out = []
    for k, x in planned.items():
        if k not in have:
            out.append(f"missing {kind}: {text(x)}")
        elif have[k] != x:
            out.append(f"wrong {kind}: {text(have[k])}, planned {text(x)}")
    if strict:
        out += [f"unexpected {kind}: {text(x)}" for k, x in have.items() if k not in planned
                and getattr(x, "dev", None) in devices]
    return out


def problems(want: Want, got: Observed) -> list[str]:
    """Every way the namespace differs from its plan, one line each (`missing ...`, `wrong ...`,
    `unexpected ...`); empty when they agree."""
    p = want.plan
    devices = want.devices()
    out: list[str] = []
    owners = {link.name: owner for link, owner in want.host_links}
    for link in want.links:
        out += _link_problems(link, got, owners.get(link.name))
    created = {link.name for link in want.links}
    for dev in dict.fromkeys((*p.up, *(d for d, _ in p.mtu))):
        if dev not in created and dev not in got.links:
            out.append(f"missing link {dev}")
    for dev in p.up:
        if dev in got.links and not got.links[dev].up:
            out.append(f"wrong link {dev}: down, planned up")
    have_addr = set(got.addresses)
    want_addr = {a for a in p.addresses if a.dev != "lo"}  # observe.read leaves lo's addresses out
    out += [f"missing address: {address_text(a)}" for a in p.addresses if a in want_addr and a not in have_addr]
    if want.strict:
        out += [f"unexpected address: {address_text(a)}" for a in sorted(have_addr - want_addr, key=str)
                if a.dev in devices]
    out += _routes(p.routes, got.routes, devices, want.strict)
    out += _keyed("neighbour", p.neighbours, got.neighbours, lambda n: (n.dev, n.ip), neighbour_text, devices,
                  want.strict)
    out += _keyed("fdb entry", p.fdb, got.fdb, lambda e: (e.dev, e.lladdr), fdb_text, devices, want.strict)
    return out


def _summary(want: Want) -> str:
    p = want.plan
    parts = [f"{len(want.links) + len(set(p.up) - {link.name for link in want.links})} links",
             f"{len(p.addresses)} addresses", f"{len(p.routes)} routes"]
    if p.neighbours or p.fdb:
        parts += [f"{len(p.neighbours)} neighbours", f"{len(p.fdb)} FDB entries"]
    return ", ".join(parts)


def check(plan: ClusterPlan, observed: Mapping[str, Observed | None], unplanned: str | None = None
          ) -> list[Finding]:
    """One finding per namespace: ok, fail (something missing or wrong), warn (only unexpected entries).
    `unplanned`: why the pods are not the plan's (the pod network's `unplanned_pods`), when they are not."""
    out = []
    for w in wants(plan, unplanned is None):
        ns = w.plan
        subj = subject(ns)
        got = observed.get(ns.name)
        if got is None:
            out.append(f.fail(CHECK, subj, f"network namespace {ns.name} does not exist",
                              [f"missing netns: {ns.name} (/run/netns/{ns.name})"]))
            continue
        lines = problems(w, got)
        bad = [x for x in lines if not x.startswith("unexpected")]
        if not lines:
            out.append(f.ok(CHECK, subj, f"netns {ns.name} matches the plan ({_summary(w)})"))
        elif bad:
            out.append(f.fail(CHECK, subj, f"netns {ns.name}: {bad[0]}" +
                              (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""), lines))
        else:
            out.append(f.warn(CHECK, subj, f"netns {ns.name}: {lines[0]}" +
                              (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""), lines))
    if unplanned is not None:
        out.append(f.skip(CHECK, "pods", f"{unplanned}; their namespaces are the plugins' to shape and are not "
                                         "compared"))
    return out
