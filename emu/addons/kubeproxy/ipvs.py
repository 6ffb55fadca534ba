"""kube-proxy's IPVS proxier, the kernel side: `sync_node()` writes what `ipvs_desired.desired()` computes for a
node into its namespace, in the order `pkg/proxy/ipvs/proxier.go` (syncProxyRules, syncService, syncEndpoint,
cleanLegacyService) and `pkg/proxy/ipvs/ipset.go` program it.

`sync_node()` is the only code of the IPVS proxier that touches a kernel.  It runs inside the node's network namespace
and needs a kernel with IP_VS and the dummy link type (this emulator's host kernel has neither; the kernel lane has
both).

Deliberate differences from kube-proxy, all invisible in the resulting kernel state:

* kube-proxy diffs ipset entries and adds/deletes them one `ipset` exec at a time; here each set is declared with
  `create -exist`, flushed and refilled in one `ipset restore`;
* kube-proxy's graceful termination manager sets a removed TCP real server's weight to 0 and deletes it once it has
  no connections (retrying every minute); here the retry happens on the node's next sync;
* the startup probe (`CanUseIPVSProxier`: add and delete a dummy VS at 198.51.100.0:20000) is not repeated.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from emu.apply import netns
from emu.addons.kubeproxy.ipvs_desired import (IpvsDesired, RealServer, VirtualServer, desired, ipset_restore_text,
    kernel_version, sysctls)
from emu.addons.kubeproxy.ipvs_names import (DUMMY_DEVICE, FLAG_HASHED, FWD_MASQ, PROTOCOL_NAMES, PROTOCOL_NUMBERS,
    Options)
from emu.addons.kubeproxy.model import NodeProxyState, SyncError, SyncResult

IPv4Address = ipaddress.IPv4Address


# --------------------------------------------------------------------------------------------- kernel side
#
# Everything below runs on a netns.run_in thread inside the node's namespace: netlink sockets keep the namespace
# they were opened in, and subprocesses forked from that thread start in it.


class _Step(Exception):
    """A failed step: its one-line description becomes the SyncError message."""


def _reason(e: BaseException) -> str:
    """One line for an exception: an OSError's strerror, a pyroute2 NetlinkError's message (its args are
    (code, message)), else the last line of its text."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    args = getattr(e, "args", ())
    if len(args) == 2 and isinstance(args[0], int):
        return str(args[1])
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def _fail(what: str, e: BaseException) -> _Step:
    return _Step(f"{what}: {_reason(e)}")


def _open_ipvs():  # type: ignore[no-untyped-def]
    """The IPVS generic-netlink socket; asking for the family loads ip_vs if the kernel has it as a module."""
    from pyroute2 import IPVS

    try:
        return IPVS()
    except Exception as e:  # NetlinkError(ENOENT): no "IPVS" family
        if getattr(e, "code", None) == errno.ENOENT:
            raise _Step("the kernel has no IP_VS (no IPVS generic netlink family)") from e
        raise _fail("cannot open the IPVS netlink socket", e) from e


def _write_sysctls(pairs: Iterable[tuple[str, str]]) -> None:
    """EnsureSysctl: read, write only when different."""
    for path, value in pairs:
        p = "/proc/sys/" + path
        try:
            with open(p) as f:
                if f.read().strip() == value:
                    continue
            with open(p, "w") as f:
                f.write(value)
        except OSError as e:
            raise _fail(f"cannot set sysctl {path.replace('/', '.')}={value}", e) from e


def _addr_of(msg) -> str | None:  # type: ignore[no-untyped-def]
    return msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")


def _local_addresses(ipr, exclude_index: int | None) -> list[IPv4Address]:  # type: ignore[no-untyped-def]
    """GetAllLocalAddressesExcept: IPv4 addresses of every link but `exclude_index`, loopback ones left out."""
    out = []
    for msg in ipr.get_addr(family=socket.AF_INET):
        a = _addr_of(msg)
        if a and msg["index"] != exclude_index and not IPv4Address(a).is_loopback:
            out.append(IPv4Address(a))
    return sorted(set(out))


def _link_index(ipr, name: str) -> int | None:  # type: ignore[no-untyped-def]
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _load_dummy_without_dummy0() -> None:
    """The dummy module creates `dummy0` in the root namespace when it loads (numdummies defaults to 1); load it
    ourselves with numdummies=0 first, so creating kube-ipvs0 leaves no link in the root namespace."""
    if os.path.isdir("/sys/module/dummy"):
        return
    subprocess.run(["modprobe", "dummy", "numdummies=0"], capture_output=True)


def ensure_dummy_device(ipr) -> int:  # type: ignore[no-untyped-def]
    """EnsureDummyDevice: create kube-ipvs0 (type dummy) if missing and leave it down, as kube-proxy does."""
    index = _link_index(ipr, DUMMY_DEVICE)
    if index is not None:
        return index
    _load_dummy_without_dummy0()
    try:
        ipr.link("add", ifname=DUMMY_DEVICE, kind="dummy")
    except Exception as e:
        hint = " (the kernel has no dummy link type)" if getattr(e, "code", None) == errno.EOPNOTSUPP else ""
        raise _Step(f"cannot create dummy device {DUMMY_DEVICE}: {_reason(e)}{hint}") from e
    index = _link_index(ipr, DUMMY_DEVICE)
    if index is None:
        raise _Step(f"dummy device {DUMMY_DEVICE} vanished after creation")
    return index


def bound_addresses(ipr, index: int) -> list[IPv4Address]:  # type: ignore[no-untyped-def]
    """GetLocalAddresses(kube-ipvs0)."""
    return sorted({IPv4Address(a) for msg in ipr.get_addr(family=socket.AF_INET, index=index)
                   if (a := _addr_of(msg)) and not IPv4Address(a).is_loopback})


def bind_addresses(ipr, index: int, want: Iterable[IPv4Address]) -> list[IPv4Address]:  # type: ignore[no-untyped-def]
    """EnsureAddressBind for each address not bound yet (as /32); returns those added."""
    have = set(bound_addresses(ipr, index))
    added = []
    for a in sorted(set(want) - have):
        try:
            ipr.addr("add", index=index, address=str(a), prefixlen=32)
        except Exception as e:
            if getattr(e, "code", None) != errno.EEXIST:
                raise _fail(f"cannot bind {a} to {DUMMY_DEVICE}", e) from e
        added.append(a)
    return added


def unbind_superfluous(ipr, index: int,  # type: ignore[no-untyped-def]
                       want: Iterable[IPv4Address]) -> list[IPv4Address]:
    """UnbindAddress for every address on kube-ipvs0 this sync did not want; returns those removed."""
    extra = sorted(set(bound_addresses(ipr, index)) - set(want))
    for a in extra:
        try:
            ipr.addr("del", index=index, address=str(a), prefixlen=32)
        except Exception as e:
            if getattr(e, "code", None) not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                raise _fail(f"cannot unbind {a} from {DUMMY_DEVICE}", e) from e
    return extra


# IPVS through pyroute2 (pyroute2.ipvs: IPVS, IPVSService, IPVSDest).  Kernel requests need, for a new service,
# scheduler, flags, timeout and netmask; for a new destination, forwarding method, weight and both thresholds
# (ip_vs_genl_parse_service / _dest with full_entry); pyroute2's defaults supply the ones not given here.


def _service_msg(vs: VirtualServer):  # type: ignore[no-untyped-def]
    from pyroute2.ipvs import IPVSService

    return IPVSService(addr=str(vs.address), port=vs.port, protocol=PROTOCOL_NUMBERS[vs.protocol],
                       sched_name=vs.scheduler, timeout=vs.timeout, flags={"flags": vs.flags, "mask": 0xFFFFFFFF})


def _service_key_msg(key: tuple[IPv4Address, str, int]):  # type: ignore[no-untyped-def]
    return _service_msg(VirtualServer(*key))


def _dest_msg(rs: RealServer):  # type: ignore[no-untyped-def]
    from pyroute2.ipvs import IPVSDest

    return IPVSDest(addr=str(rs.ip), port=rs.port, weight=rs.weight, fwd_method=FWD_MASQ)


@dataclass(frozen=True, slots=True)
class AppliedService:
    """A virtual server as the kernel reports it (flags without FLAG_HASHED)."""

    address: IPv4Address
    protocol: str
    port: int
    scheduler: str
    flags: int
    timeout: int

    @property
    def key(self) -> tuple[IPv4Address, str, int]:
        return (self.address, self.protocol, self.port)

    def matches(self, vs: VirtualServer) -> bool:
        """VirtualServer.Equal."""
        return (self.scheduler, self.flags, self.timeout) == (vs.scheduler, vs.flags, vs.timeout)


@dataclass(frozen=True, slots=True)
class AppliedDest:
    ip: IPv4Address
    port: int
    weight: int
    active: int
    inactive: int


def parse_service(msg) -> AppliedService | None:  # type: ignore[no-untyped-def]
    """An IPVS_CMD_GET_SERVICE answer; None for what kube-proxy ignores (fwmark services, IPv6)."""
    s = msg.get("IPVS_CMD_ATTR_SERVICE")
    if s is None or s.get("IPVS_SVC_ATTR_AF") != socket.AF_INET or s.get("IPVS_SVC_ATTR_ADDR") is None:
        return None
    proto = PROTOCOL_NAMES.get(s.get("IPVS_SVC_ATTR_PROTOCOL"))
    if proto is None:
        return None
    flags = (s.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0) & ~FLAG_HASHED
    return AppliedService(IPv4Address(s.get("IPVS_SVC_ATTR_ADDR")), proto, s.get("IPVS_SVC_ATTR_PORT"),
                          s.get("IPVS_SVC_ATTR_SCHED_NAME") or "", flags, s.get("IPVS_SVC_ATTR_TIMEOUT") or 0)


def parse_dest(msg) -> AppliedDest | None:  # type: ignore[no-untyped-def]
    d = msg.get("IPVS_CMD_ATTR_DEST")
    if d is None or d.get("IPVS_DEST_ATTR_ADDR") is None:
        return None
    return AppliedDest(IPv4Address(d.get("IPVS_DEST_ATTR_ADDR")), d.get("IPVS_DEST_ATTR_PORT"),
                       d.get("IPVS_DEST_ATTR_WEIGHT") or 0, d.get("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0,
                       d.get("IPVS_DEST_ATTR_INACT_CONNS") or 0)


def applied_services(ipvs) -> dict[tuple[IPv4Address, str, int], AppliedService]:  # type: ignore[no-untyped-def]
    out = {}
    for msg in ipvs.service("dump"):
        svc = parse_service(msg)
        if svc is not None:
            out[svc.key] = svc
    return out


def applied_dests(ipvs, key: tuple[IPv4Address, str, int]) -> list[AppliedDest]:  # type: ignore[no-untyped-def]
    return [d for msg in ipvs.dest("dump", service=_service_key_msg(key)) if (d := parse_dest(msg)) is not None]


def sync_service(ipvs, vs: VirtualServer, applied: AppliedService | None) -> None:  # type: ignore[no-untyped-def]
    """syncService (without the address binding): add the virtual server, or update it when it differs."""
    try:
        if applied is None:
            ipvs.service("add", service=_service_msg(vs))
        elif not applied.matches(vs):
            ipvs.service("set", service=_service_msg(vs))
    except Exception as e:
        raise _fail(f"cannot {'add' if applied is None else 'update'} IPVS service {vs}", e) from e


def sync_endpoint(ipvs, vs: VirtualServer) -> None:  # type: ignore[no-untyped-def]
    """syncEndpoint: add missing real servers (weight 1), restore the weight of ones being drained, and remove the
    ones no longer wanted -- a TCP one with connections left is drained first (weight 0), as the graceful
    termination manager does; UDP and SCTP ones go at once."""
    want = {(rs.ip, rs.port): rs for rs in vs.real_servers}
    try:
        have = {(d.ip, d.port): d for d in applied_dests(ipvs, vs.key)}
        svc = _service_key_msg(vs.key)
        for key, rs in want.items():
            cur = have.get(key)
            if cur is None:
                ipvs.dest("add", service=svc, dest=_dest_msg(rs))
            elif cur.weight != rs.weight:
                ipvs.dest("set", service=svc, dest=_dest_msg(rs))
        for key, cur in have.items():
            if key in want:
                continue
            if vs.protocol == "TCP" and cur.active + cur.inactive > 0:
                if cur.weight != 0:
                    ipvs.dest("set", service=svc, dest=_dest_msg(RealServer(cur.ip, cur.port, 0)))
            else:
                ipvs.dest("del", service=svc, dest=_dest_msg(RealServer(cur.ip, cur.port)))
    except _Step:
        raise
    except Exception as e:
        raise _fail(f"cannot sync the real servers of IPVS service {vs}", e) from e


def clean_legacy_services(ipvs, applied: Iterable[tuple[IPv4Address, str, int]],  # type: ignore[no-untyped-def]
                          active: Iterable[tuple[IPv4Address, str, int]]) -> list[tuple[IPv4Address, str, int]]:
    """cleanLegacyService: delete every IPv4 virtual server this sync did not produce; returns their keys."""
    stale = sorted(set(applied) - set(active))
    for key in stale:
        try:
            ipvs.service("del", service=_service_key_msg(key))
        except Exception as e:
            if getattr(e, "code", None) != errno.ESRCH:
                raise _fail(f"cannot delete IPVS service {key[0]}:{key[2]}/{key[1]}", e) from e
    return stale


def _restore(argv: list[str], text: str, what: str) -> None:
    try:
        r = subprocess.run(argv, input=text, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise _Step(f"{argv[0]} is not installed") from e
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        raise _Step(f"{what} failed: {lines[-1] if lines else f'exit status {r.returncode}'}")


def load_ipsets(want: IpvsDesired) -> None:
    """One `ipset restore` for every set (in the calling thread's namespace)."""
    _restore(["ipset", "restore"], ipset_restore_text(want), "ipset restore")


def load_iptables(want: IpvsDesired, first: bool, backend: str = "nft") -> None:
    """One `iptables-restore --noflush -w` (in the calling thread's namespace); a first sync prefixes the jumps."""
    _restore([f"iptables-{backend}-restore", "--noflush", "-w"], (want.jumps if first else "") + want.iptables,
             f"iptables-{backend}-restore")


def node_addresses_here() -> list[IPv4Address]:
    """The nodeAddressSet of the namespace the calling thread is in."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return _local_addresses(ipr, _link_index(ipr, DUMMY_DEVICE))


def _sync_here(state: NodeProxyState, first: bool, backend: str, options: Options) -> tuple[IpvsDesired, int]:
    """One syncProxyRules inside the node's namespace, in upstream order: IPVS (loading ip_vs), sysctls (first
    sync, as NewProxier), kube-ipvs0, virtual and real servers with their addresses bound, ipsets, iptables, then
    superfluous addresses unbound and legacy virtual servers deleted.  Returns the desired state and the number of
    kernel objects it covers."""
    from pyroute2 import IPRoute

    ipvs = _open_ipvs()
    try:
        with IPRoute() as ipr:
            if first:
                _write_sysctls(sysctls(options))
            index = ensure_dummy_device(ipr)
            want = desired(state, _local_addresses(ipr, index), options)
            applied = applied_services(ipvs)
            for vs in want.virtual_servers:
                sync_service(ipvs, vs, applied.get(vs.key))
                sync_endpoint(ipvs, vs)
            bind_addresses(ipr, index, want.bind_addresses)
            load_ipsets(want)
            load_iptables(want, first, backend)
            unbind_superfluous(ipr, index, want.bind_addresses)
            clean_legacy_services(ipvs, applied_services(ipvs), [vs.key for vs in want.virtual_servers])
    finally:
        ipvs.close()
    objects = (len(want.virtual_servers) + sum(len(vs.real_servers) for vs in want.virtual_servers)
               + sum(len(s.entries) for s in want.ipsets) + want.iptables.count("\n"))
    return want, objects


def sync_node(ns: str, state: NodeProxyState, first: bool, backend: str = "nft",
              previous: NodeProxyState | None = None, options: Options | None = None) -> SyncResult:
    """One full IPVS-mode sync of one node, inside its namespace `ns`.  `previous` is accepted for the common
    signature and not needed: every sync is a full one, and what is stale is read back from the kernel (kube-ipvs0's
    addresses, the IPVS table) or replaced wholesale (ipsets, the proxier's chains).  Raises SyncError with one
    line saying which step failed."""
    t0 = time.monotonic()
    opts = options or Options(kernel_version=kernel_version())
    try:
        _, objects = netns.run_in(ns, lambda: _sync_here(state, first, backend, opts))
    except _Step as e:
        raise SyncError(f"ipvs sync of {state.node} failed: {e}") from None
    except OSError as e:  # entering the namespace
        raise SyncError(f"ipvs sync of {state.node} failed: {e.strerror or e}") from None
    return SyncResult(state.node, time.monotonic() - t0, objects)
