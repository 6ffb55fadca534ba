"""Which dataplane features the running kernel has, found by trying them in a scratch namespace (never the root
one), so every mode that needs one can say in one line what is missing instead of half-building.

Some modules create devices in the root namespace the moment they load: dummy makes `dummy0` (numdummies=1),
ipip `tunl0`, ip_gre `gre0`/`gretap0`/`erspan0`.  Trying those link types would load them and leave links in the
root namespace, which emu never does; for them we only look whether the module is built in, loaded, or installed
(modules.builtin / modules.dep), without loading it.
"""
from __future__ import annotations

import errno
import functools
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass

from emu.apply import netns

IPPROTO_SCTP = 132


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    present: bool
    detail: str


# name -> (what needs it, `ip link add` arguments that create a device of that kind in the scratch namespace)
LINK_KINDS = {
    "vxlan": ("flannel vxlan", ["vx0", "type", "vxlan", "id", "1", "dstport", "8472"]),
    "bridge": ("cni0, the underlay", ["br0", "type", "bridge"]),
    "macvlan": ("secondary networks", ["mv0", "link", "v0", "type", "macvlan", "mode", "bridge"]),
    "dummy": ("IPVS mode's kube-ipvs0", ["d0", "type", "dummy"]),
    "ipip": ("Calico IPIP", ["t0", "type", "ipip", "remote", "192.0.2.1", "local", "192.0.2.2"]),
    "gre": ("GRE tunnels", ["g0", "type", "gre", "remote", "192.0.2.1", "local", "192.0.2.2"]),
    "vlan": ("VLAN sub-interfaces", ["v0.10", "link", "v0", "type", "vlan", "id", "10"]),
    "vrf": ("the vrf CNI plugin", ["vrf0", "type", "vrf", "table", "10"]),
    "wireguard": ("encrypted overlays", ["wg0", "type", "wireguard"]),
    "ifb": ("the bandwidth CNI plugin's ingress shaping", ["ifb9", "type", "ifb"]),
}


def _run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-n", ns, *argv], capture_output=True, text=True)


# link kinds whose module creates fallback devices in every namespace (the root one included) when it loads; ifb
# creates numifbs=2 devices (ifb0, ifb1) in the root one (drivers/net/ifb.c ifb_init_module)
NOT_TRIED = {"dummy": "dummy", "ipip": "ipip", "gre": "ip_gre", "ifb": "ifb"}


def module_available(module: str) -> bool:
    """Built in, loaded, or installed for the running kernel, found without loading it."""
    if os.path.isdir(f"/sys/module/{module}"):
        return True
    base = f"/lib/modules/{os.uname().release}"
    for name in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(base, name)) as f:
                if any(line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_") ==
                       module.replace("-", "_") for line in f):
                    return True
        except OSError:
            continue
    return False


def _root_has_kind(kind: str) -> bool:
    """A device of this kind is already in the root namespace (read only): its module is in, built in or loaded,
    even where neither /sys/module nor modules.builtin says so."""
    r = subprocess.run(["ip", "-o", "link", "show", "type", kind], capture_output=True, text=True)
    return r.returncode == 0 and bool(r.stdout.strip())


def _link(ns: str, kind: str) -> Feature:
    need, args = LINK_KINDS[kind]
    if kind in NOT_TRIED:
        ok = module_available(NOT_TRIED[kind]) or _root_has_kind(kind)
        return Feature(kind, ok, f"needed by {need}" + ("" if ok else f": no {NOT_TRIED[kind]} module for "
                                                                       f"{os.uname().release}"))
    r = _run(ns, "link", "add", *args)
    why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    return Feature(kind, r.returncode == 0, f"needed by {need}" + ("" if r.returncode == 0 else f": {why}"))


def _sctp(ns: str) -> Feature:
    def attempt() -> str:
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP).close()
            return ""
        except OSError as e:
            return os.strerror(e.errno or errno.EPROTONOSUPPORT)

    err = netns.run_in(ns, attempt)
    return Feature("sctp", not err, "SCTP sockets (SCTP Services and policy ports)" + (f": {err}" if err else ""))


def _ipvs(ns: str) -> Feature:
    """IP_VS: asking generic netlink for the IPVS family loads the module if the kernel has it."""
    def attempt() -> bool:
        from pyroute2.netlink.generic import GenericNetlinkSocket

        s = GenericNetlinkSocket()
        try:
            s.bind("IPVS", None)
            return True
        except Exception:
            return False
        finally:
            s.close()

    ok = netns.run_in(ns, attempt)
    return Feature("ip_vs", ok, "IPVS virtual servers (kube-proxy ipvs mode)" + ("" if ok else ": no IPVS netlink family"))


def _netem(ns: str) -> Feature:
    r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                       capture_output=True, text=True)
    return Feature("netem", r.returncode == 0, "network impairment (delay, loss)" +
                   ("" if r.returncode == 0 else f": {r.stderr.strip() or 'tc failed'}"))


def _nftables(ns: str) -> Feature:
    r = subprocess.run(["ip", "netns", "exec", ns, "nft", "add", "table", "ip", "emu-probe"], capture_output=True,
                       text=True)
    return Feature("nftables", r.returncode == 0, "kube-proxy nftables mode" +
                   ("" if r.returncode == 0 else f": {r.stderr.strip()}"))


def _br_netfilter(ns: str) -> Feature:
    ok = netns.run_in(ns, lambda: os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"))
    return Feature("br_netfilter", ok, "iptables on bridged traffic (Services with same-node endpoints)")


@functools.cache
def features() -> dict[str, Feature]:
    """Probe once per process in a scratch namespace that is always removed."""
    ns = f"emu-kprobe-{secrets.token_hex(4)}"
    netns.create(ns)
    try:
        _run(ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        out = [_link(ns, k) for k in LINK_KINDS]
        out += [_ipvs(ns), _sctp(ns), _netem(ns), _nftables(ns), _br_netfilter(ns)]
    finally:
        netns.remove(ns)
    return {f.name: f for f in out}


def has(name: str) -> bool:
    return features()[name].present


def require(name: str, what: str) -> None:
    """Raise a one-line ClusterError if the kernel lacks `name`."""
    from emu.errors import ClusterError

    f = features()[name]
    if not f.present:
        raise ClusterError(f"{what} needs {name} ({f.detail}), which this kernel lacks; run it on a kernel that "
                           f"has it (emu kernel-features lists what this one has)")
