"""Apply: the only code that changes the kernel.  It turns plan objects into netlink requests (pyroute2, one socket
per namespace, created by a thread that setns()es: no fork per socket) and rule sets into one `iptables-restore
--noflush` per namespace, as flanneld and kube-proxy write theirs.  `ensure` steps treat EEXIST as success."""
from __future__ import annotations

import errno
import os
import socket
import subprocess
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import netns
from .errors import EmuError
from .plan import Address, Fdb, IptablesTable, Link, Neighbour, NetnsPlan, PodPlan, Route

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 4
RTPROT_BOOT = 3


class ApplyError(EmuError):
    pass


class Sockets:
    """One rtnetlink socket per namespace, opened on first use and closed together."""

    def __init__(self) -> None:
        self._ipr: dict[str, IPRoute] = {}
        self._fds: dict[str, int] = {}

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
        fd = self._fds.pop(ns, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for ns in list(self._ipr) + list(self._fds):
            self.release(ns)

    def __enter__(self) -> "Sockets":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ensure(call, *args, **kw):  # type: ignore[no-untyped-def]
    try:
        return call(*args, **kw)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise
        return None


def _index(ipr: IPRoute, name: str) -> int:
    idx = ipr.link_lookup(ifname=name)
    if not idx:
        raise ApplyError(f"interface {name} not found")
    return int(idx[0])


def create_links(ns: NetnsPlan, links: Iterable[Link], s: Sockets) -> None:
    """Create links in order (bridges before the veths enslaved to them); veth peers go straight to their netns."""
    ipr = s.ipr(ns.name)
    for link in links:
        kw: dict[str, object] = {"ifname": link.name, "kind": link.kind}
        if link.mtu:
            kw["mtu"] = link.mtu
        if link.mac:
            kw["address"] = link.mac
        if link.kind == "veth":
            peer: dict[str, object] = {"ifname": link.peer, "net_ns_fd": s.fd(link.peer_netns or ns.name)}
            if link.peer_mtu:
                peer["mtu"] = link.peer_mtu
            kw["peer"] = peer
            if link.master:
                kw["master"] = _index(ipr, link.master)
        elif link.kind == "vxlan" and link.vxlan:
            v = link.vxlan
            kw.update(vxlan_id=v.vni, vxlan_port=v.port, vxlan_local=str(v.local),
                      vxlan_link=_index(ipr, v.dev), vxlan_learning=int(v.learning))
        _ensure(ipr.link, "add", **kw)
        if link.hairpin:
            ipr.brport("set", index=_index(ipr, link.name), mode=1)  # IFLA_BRPORT_MODE: hairpin


def configure(ns: NetnsPlan, s: Sockets, extra_up: Iterable[str] = ()) -> None:
    """Everything but link creation: MTUs of arriving peers, addresses, link state, routes, neighbours, FDB."""
    ipr = s.ipr(ns.name)
    idx: dict[str, int] = {}

    def index(name: str) -> int:
        if name not in idx:
            idx[name] = _index(ipr, name)
        return idx[name]

    for name, mtu in ns.mtu:
        ipr.link("set", index=index(name), mtu=mtu)
    for a in ns.addresses:
        _ensure(ipr.addr, "add", index=index(a.dev), address=str(a.cidr.ip), prefixlen=a.cidr.network.prefixlen)
    for name in (*ns.up, *extra_up):
        ipr.link("set", index=index(name), state="up")
    for n in ns.neighbours:
        _ensure(ipr.neigh, "add", dst=str(n.ip), lladdr=n.lladdr, ifindex=index(n.dev), state=NUD_PERMANENT)
    for f in ns.fdb:
        _ensure(ipr.fdb, "add", ifindex=index(f.dev), lladdr=f.lladdr, dst=str(f.dst), state=NUD_PERMANENT,
                flags=NTF_SELF)
    for r in ns.routes:  # last, as flannel does, "so the kernel won't ARP"
        _ensure(ipr.route, "add", **route_args(r, index(r.dev)))


def route_args(r: Route, oif: int) -> dict[str, object]:
    # proto boot (3) is what `ip route add` and the netlink library flannel and the CNI plugins use.
    kw: dict[str, object] = {"dst": str(r.dst), "oif": oif, "proto": RTPROT_BOOT}
    if r.via is not None:
        kw["gateway"] = str(r.via)
    if r.onlink:
        kw["flags"] = RTNH_F_ONLINK
    return kw


def write_sysctls(ns: NetnsPlan) -> None:
    """/proc/sys/net belongs to the namespace of the thread that opens it: write from a thread inside `ns`."""
    if not ns.sysctls:
        return

    def work() -> None:
        for key, value in ns.sysctls:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)

    netns.run_in(ns.name, work)


def restore_text(tables: Iterable[IptablesTable]) -> str:
    """iptables-restore input: each table declares its chains, appends its rules and commits."""
    out = []
    for t in tables:
        out.append(f"*{t.name}")
        out.extend(f":{chain} - [0:0]" for chain in t.chains)
        out.extend(t.rules)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def iptables_restore(ns: str, tables: Iterable[IptablesTable]) -> None:
    """One `iptables-restore --noflush` per namespace and sync, run by a thread inside the namespace."""
    text = restore_text(tables)
    if text.strip() == "":
        return
    proc = netns.run_in(ns, lambda: subprocess.run(["iptables-restore", "--noflush", "-w"], input=text,
                                                     capture_output=True, text=True))
    if proc.returncode != 0:
        raise ApplyError(f"iptables-restore in {ns} failed: {proc.stderr.strip()}")


def apply_infra(plans: Iterable[NetnsPlan], s: Sockets) -> None:
    plans = list(plans)
    for ns in plans:
        create_links(ns, ns.links, s)
    for ns in plans:
        configure(ns, s)
        write_sysctls(ns)
        if ns.iptables:
            iptables_restore(ns.name, ns.iptables)


def apply_pod(p: PodPlan, s: Sockets) -> None:
    """Wire one pod: the veth is created from the node's side with eth0 already in the pod's namespace."""
    node = NetnsPlan(p.node_netns, "node", p.node)
    create_links(node, [p.host_link], s)
    s.ipr(p.node_netns).link("set", index=_index(s.ipr(p.node_netns), p.host_link.name), state="up")
    configure(p.netns, s)
    write_sysctls(p.netns)
    s.release(p.netns.name)
