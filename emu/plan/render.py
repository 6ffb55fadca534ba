"""A plan rendered as the commands a person would type: `ip`, `bridge`, `sysctl` and `iptables-restore` lines.
This is `emu up --dry-run`, and the reference a reader can replay by hand.

`script` renders the cluster's own namespaces (underlay, external, nodes) and takes the pods' part from the pod
network (emu.network: a network that wires pods by netlink renders them with `pod_commands`, one that runs CNI
plugins renders the plugin calls)."""
from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator

from emu.plan.objects import ClusterPlan, Link, NetnsPlan, PodPlan, restore_text


def _link(ns: str, link: Link) -> Iterator[str]:
    head = f"ip -n {ns} link add {link.name}"
    if link.mac:
        head += f" address {link.mac}"
    if link.mtu:
        head += f" mtu {link.mtu}"
    if link.master:
        head += f" master {link.master}"
    if link.kind == "veth":
        peer = f" type veth peer name {link.peer} netns {link.peer_netns}"
        yield head + peer + (f" mtu {link.peer_mtu}" if link.peer_mtu else "")
    elif link.kind == "vxlan" and link.vxlan:
        v = link.vxlan
        yield head + f" type vxlan id {v.vni} local {v.local} dev {v.dev} dstport {v.port}" + \
            ("" if v.learning else " nolearning")
    else:
        yield head + f" type {link.kind}"
    if link.hairpin:
        yield f"ip -n {ns} link set {link.name} type bridge_slave hairpin on"


def netns_commands(ns: NetnsPlan, links: tuple[Link, ...] | None = None) -> Iterator[str]:
    n = ns.name
    for link in ns.links if links is None else links:
        yield from _link(n, link)
    for dev, mtu in ns.mtu:
        yield f"ip -n {n} link set {dev} mtu {mtu}"
    for a in ns.addresses:
        yield f"ip -n {n} addr add {a.cidr} dev {a.dev}"
    for dev in ns.up:
        yield f"ip -n {n} link set {dev} up"
    for nb in ns.neighbours:
        yield f"ip -n {n} neigh add {nb.ip} lladdr {nb.lladdr} dev {nb.dev} nud permanent"
    for f in ns.fdb:
        yield f"bridge -n {n} fdb append {f.lladdr} dev {f.dev} dst {f.dst} self permanent"
    for r in ns.routes:
        dst = "default" if r.dst.prefixlen == 0 else str(r.dst)
        if r.nexthops:
            yield f"ip -n {n} route add {dst} " + " ".join(f"nexthop via {h} dev {r.dev}" for h in r.nexthops)
            continue
        yield f"ip -n {n} route add {dst}" + (f" via {r.via}" if r.via else "") + f" dev {r.dev}" + \
            (" onlink" if r.onlink else "")
    for key, value in ns.sysctls:
        yield f"ip netns exec {n} sysctl -qw {shlex.quote(f'{key}={value}')}"  # `32768 60999` is one argument
    if ns.iptables:
        yield f"ip netns exec {n} {ns.iptables_restore} --noflush <<'EOF'\n{restore_text(ns.iptables)}EOF"


def pod_commands(p: PodPlan) -> Iterator[str]:
    """One pod wired as the plan says: its veth from the node's namespace (the peer straight into the pod's), the
    host end up, then the pod's own namespace.  A hostNetwork pod has nothing to wire."""
    if p.host_network:
        return
    yield f"# pod {p.key} on {p.node}"
    node = NetnsPlan(p.node_netns, "node", p.node)
    yield from netns_commands(node, (p.host_link,))
    yield f"ip -n {p.node_netns} link set {p.host_link.name} up"
    yield from netns_commands(p.netns)


def script(plan: ClusterPlan, pods: Iterable[str]) -> str:
    """The whole dry run: the namespaces, the cluster's own ones in creation order, then `pods` (the pod network's
    lines for them)."""
    lines = [f"# cluster {plan.cluster}: {len(plan.nodes)} nodes, {len(plan.pods)} pods"]
    lines += [f"ip netns add {n}" for n in plan.all_netns()]
    for ns in plan.infra:
        lines.append(f"# {ns.role} {ns.owner}")
        lines.extend(netns_commands(ns))
    lines.extend(pods)
    return "\n".join(lines) + "\n"
