"""Apply: the only code that changes the kernel.  It turns plan objects into netlink requests (pyroute2, one socket
per namespace, created by a thread that setns()es: no fork per socket) and rule sets into one `iptables-restore
--noflush` per namespace, as flanneld and kube-proxy write theirs.  `ensure` steps treat EEXIST as success."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from collections.abc import Callable

from pyroute2 import IPRoute

from emu.apply import drivers, netns, nlbatch
from emu.errors import ApplyError
from emu.apply.nlbatch import Batch
from emu.plan.content import Ruleset
from emu.plan.objects import IptablesTable, Link, NetnsPlan, PodPlan, restore_text



FIRST_INDEX = 32  # above every fallback tunnel device a new namespace may start with
ENTER_CHUNK = 200  # namespaces entered per worker trip (bounds the sockets open at once)


class Sockets:
    """Per namespace, opened on first use and closed together: an rtnetlink batch socket, a pyroute2 IPRoute for
    reading state back, and a namespace fd (veth peers are sent to their namespace by fd)."""

    def __init__(self) -> None:
        self._ipr: dict[str, IPRoute] = {}
        self._fds: dict[str, int] = {}
        self._batch: dict[str, Batch] = {}

    def batch(self, ns: str) -> Batch:
        if ns not in self._batch:
            self._batch[ns] = Batch(nlbatch.open_socket(ns))
        return self._batch[ns]

    def forget_fd(self, ns: str) -> None:
        fd = self._fds.pop(ns, None)
        if fd is not None:
            os.close(fd)

    def ipr(self, ns: str) -> IPRoute:
        if ns not in self._ipr:
            sock = netns.socket_in(ns, socket.AF_NETLINK, socket.SOCK_DGRAM, 0)  # NETLINK_ROUTE
            self._ipr[ns] = IPRoute(use_socket=sock, groups=0)
        return self._ipr[ns]

    def fd(self, ns: str) -> int:
        if ns not in self._fds:
            self._fds[ns] = os.open(netns.path(ns), os.O_RDONLY)
        return self._fds[ns]

    def release(self, ns: str) -> None:
        ipr = self._ipr.pop(ns, None)
        if ipr is not None:
            ipr.close()
        self.forget_fd(ns)

    def close(self) -> None:
        for ns in list(self._ipr) + list(self._fds):
            self.release(ns)
        for b in self._batch.values():
            b.sock.close()
        self._batch.clear()

    def __enter__(self) -> "Sockets":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Indexes:
    """Interface indexes, chosen by us so that no request has to look one up.

    RTM_NEWLINK accepts an ifindex (and a veth peer's).  A namespace we just created holds lo (1) and, when the
    ipip/gre/sit modules are loaded and net.core.fb_tunnels_only_for_init_net is 0 (the default), their fallback
    devices (tunl0, gre0, gretap0, erspan0, sit0, ...), which take the next low indexes; so our counter starts at
    FIRST_INDEX, well above them.  For a namespace that already holds links (live changes), `seed` continues after
    the highest index the kernel reports.
    """

    def __init__(self) -> None:
        self._map: dict[tuple[str, str], int] = {}
        self._next: dict[str, int] = {}

    def assign(self, ns: str, name: str) -> int:
        key = (ns, name)
        if key not in self._map:
            self._map[key] = self._next.get(ns, FIRST_INDEX)
            self._next[ns] = self._map[key] + 1
        return self._map[key]

    def known(self, ns: str, name: str) -> bool:
        return (ns, name) in self._map

    def get(self, ns: str, name: str) -> int:
        if name == "lo":
            return 1
        try:
            return self._map[(ns, name)]
        except KeyError:
            raise ApplyError(f"interface {name} of {ns} is not known") from None

    def seed(self, ns: str, s: "Sockets") -> None:
        links = {m.get("IFLA_IFNAME"): int(m["index"]) for m in s.ipr(ns).get_links()}
        for name, idx in links.items():
            self._map[(ns, name)] = idx
        self._next[ns] = max(links.values()) + 1


def _vxlan_data(link: Link, ns: str, ix: Indexes) -> list[tuple[str, object]]:
    assert link.vxlan is not None
    v = link.vxlan
    return [("IFLA_VXLAN_ID", v.vni), ("IFLA_VXLAN_LINK", ix.get(ns, v.dev)), ("IFLA_VXLAN_LOCAL", str(v.local)),
            ("IFLA_VXLAN_PORT", v.port), ("IFLA_VXLAN_LEARNING", int(v.learning))]


def create_links(ns: str, links: Iterable[Link], b: Batch, ix: Indexes, fds: "Sockets") -> None:
    """Queue link creation in order (bridges before the veths enslaved to them); a veth is created with its peer
    already in the peer's namespace and the host end up, as the bridge plugin does."""
    for link in links:
        idx = ix.assign(ns, link.name)
        master = ix.get(ns, link.master) if link.master else None
        if link.kind == "veth":
            peer_ns = link.peer_netns or ns
            assert link.peer is not None
            b.veth_add(link.name, idx, link.peer, ix.assign(peer_ns, link.peer), fds.fd(peer_ns), link.mtu,
                       link.peer_mtu, master=master, up=True, peer_up=False)  # a peer can't be up before it is paired
        else:
            data = _vxlan_data(link, ns, ix) if link.kind == "vxlan" else None
            b.link_add(link.name, link.kind, index=idx, mtu=link.mtu, master=master, mac=link.mac, data=data)
        if link.hairpin:
            b.link_set(idx, hairpin=True, what=f"hairpin on {link.name}")


def configure(ns: NetnsPlan, b: Batch, ix: Indexes) -> None:
    """Everything but link creation: MTUs of arriving peers, addresses, link state, neighbours, FDB, routes."""
    n = ns.name
    for name, mtu in ns.mtu:
        b.link_set(ix.get(n, name), mtu=mtu, what=f"mtu {mtu} on {name}")
    for a in ns.addresses:
        b.addr_add(ix.get(n, a.dev), str(a.cidr.ip), a.cidr.network.prefixlen)
    for name in ns.up:
        b.link_set(ix.get(n, name), up=True, what=f"set {name} up")
    for nb in ns.neighbours:
        b.neigh_add(ix.get(n, nb.dev), str(nb.ip), nb.lladdr)
    for f in ns.fdb:
        b.fdb_add(ix.get(n, f.dev), f.lladdr, str(f.dst))
    for r in ns.routes:  # last, as flannel does, "so the kernel won't ARP"
        b.route_add(str(r.dst.network_address), r.dst.prefixlen, ix.get(n, r.dev),
                    str(r.via) if r.via else None, r.onlink, nexthops=tuple(str(h) for h in r.nexthops))


def _write_sysctls(sysctls: Iterable[tuple[str, str]]) -> None:
    """Must run on a thread inside the namespace: /proc/sys/net belongs to the namespace of the thread opening it."""
    for key, value in sysctls:
        path = "/proc/sys/" + key.replace(".", "/")
        if key.startswith("net.bridge.") and not os.path.exists(path):
            continue  # no br_netfilter in this kernel: `emu kernel-features` reports it
        with open(path, "w") as f:
            f.write(value)


def _enter_here(ns: NetnsPlan) -> socket.socket:
    """Run inside the namespace: write its sysctls and open the rtnetlink socket its batch goes through."""
    _write_sysctls(ns.sysctls)
    return nlbatch.open_socket_here()


def enter(ns: NetnsPlan) -> socket.socket:
    return netns.run_in(ns.name, lambda: _enter_here(ns))


def iptables_restore(ns: str, tables: Iterable[IptablesTable], cmd: str = "iptables-restore") -> None:
    """One `iptables-restore --noflush` per namespace and sync, run by a thread inside the namespace: a ruleset,
    applied by its driver (emu.apply.drivers)."""
    text = restore_text(tables)
    if text.strip() == "":
        return
    drivers.apply([Ruleset(ns, ns, f"{cmd} --noflush -w", text)])


def apply_infra(plans: Iterable[NetnsPlan], s: Sockets, ix: Indexes) -> None:
    plans = list(plans)
    for ns in plans:  # in order: the underlay creates the nodes' eth0 before a node's vxlan device needs it
        b = s.batch(ns.name)
        create_links(ns.name, ns.links, b, ix, s)
        b.commit()
    for ns in plans:
        b = Batch(enter(ns))
        try:
            configure(ns, b, ix)
            b.commit()
        finally:
            b.sock.close()
        if ns.iptables:
            iptables_restore(ns.name, ns.iptables, ns.iptables_restore)


def apply_pods(pods: Iterable[PodPlan], s: Sockets, ix: Indexes, progress: Callable[[int], None] = lambda n: None
               ) -> None:
    """Wire pods: per node one batch creates every veth (eth0 straight into its pod's namespace); then per pod one
    trip into its namespace configures eth0, lo, routes and sysctls."""
    pods = [p for p in pods if not p.host_network]  # hostNetwork pods have nothing to wire
    by_node: dict[str, list[PodPlan]] = {}
    for p in pods:
        by_node.setdefault(p.node_netns, []).append(p)
    for node, group in by_node.items():
        b = s.batch(node)
        for p in group:
            create_links(node, (p.host_link,), b, ix, s)
        b.commit()
    done = 0
    for start in range(0, len(pods), ENTER_CHUNK):
        chunk = pods[start:start + ENTER_CHUNK]
        plans = {p.netns.name: p.netns for p in chunk}
        socks = netns.each(list(plans), lambda name: _enter_here(plans[name]))
        for p, sock in zip(chunk, socks):
            b = Batch(sock)
            try:
                configure(p.netns, b, ix)
                b.commit()
            finally:
                sock.close()
            s.forget_fd(p.netns.name)
            done += 1
            progress(done)


def ensure_node(ns: NetnsPlan, s: Sockets, ix: Indexes) -> None:
    """Live change: create the node links the kernel lacks (cni0 on a node's first pod) and (re)assert addresses
    and link state; existing entries are left as they are."""
    missing = [link for link in ns.links if not ix.known(ns.name, link.name)]
    b = s.batch(ns.name)
    create_links(ns.name, missing, b, ix, s)
    for a in ns.addresses:
        b.addr_add(ix.get(ns.name, a.dev), str(a.cidr.ip), a.cidr.network.prefixlen)
    for name in ns.up:
        b.link_set(ix.get(ns.name, name), up=True, what=f"set {name} up")
    b.commit()
