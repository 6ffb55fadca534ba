"""Everything the doctor reads from the kernel or sends on the wire, behind one protocol (`Kernel`), so the checks
stay pure and a fake can stand in for the kernel in tests.

Reads happen inside the cluster's namespaces from throw-away threads that setns() (emu.apply.netns, through
emu.apply.tools for a tool); nothing is written anywhere but in the scratch namespace `render` creates for itself
and always removes: the node's desired kube-proxy objects (the ones `emu up --dry-run` prints) are applied there by
the same drivers a sync uses (emu.apply.drivers) and read back with the node's own tool, so both sides of the
comparison are printed by the same `iptables-save` or `nft`."""
from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from emu.cluster import daemons
from emu.apply import drivers, netns
from emu.observe import readback as observe
from emu.apply.links import Sockets
from emu.cluster.daemons import Daemon
from emu.addons.kubeproxy import proxiers
from emu.model.types import ProxyMode
from emu.plan.content import PlanObject
from emu.observe.readback import Observed
from emu.observe.doctor.pairs import Probe

if TYPE_CHECKING:
    from emu.cluster.lifecycle import Cluster

CONNTRACK_DIR = "/proc/sys/net/netfilter"


class Kernel(Protocol):
    """The doctor's side effects."""

    def observe(self, names: list[str]) -> Mapping[str, Observed | None]:
        """Links, addresses, routes, permanent neighbours and FDB entries of each namespace (None: it is gone)."""
        ...

    def ruleset(self, ns: str, mode: ProxyMode, backend: str) -> str | None:
        """The node's live rules: `iptables-save` (all tables) or `nft list table ip kube-proxy`; None when the
        tool failed (no table)."""
        ...

    def render(self, node: str, objects: Sequence[PlanObject], mode: ProxyMode, backend: str) -> str:
        """The node's desired kube-proxy objects (its tool runs, as the dry run prints them), applied by their
        drivers in a scratch namespace and printed back by the same tool as the live rules."""
        ...

    def route_get(self, ns: str, ip: str) -> str | None:
        """The route the namespace's kernel picks for `ip` (`ip route get`), None when it has none."""
        ...

    def conntrack(self, ns: str) -> tuple[int, int] | None:
        """(nf_conntrack_count, nf_conntrack_max) inside the namespace; None without conntrack."""
        ...

    def probe(self, cl: "Cluster", p: Probe, timeout: float) -> dict[str, Any]:
        """Send the probe (once more if it fails); the probe result as `emu probe -o json` has it, plus `tries`."""
        ...

    def dns(self, cl: "Cluster", pod: str, name: str, timeout: float) -> dict[str, Any]:
        """Resolve `name` from the pod with its resolv.conf (`emu probe POD --dns NAME`)."""
        ...

    def daemons(self, cl: "Cluster") -> list[Daemon]:
        """emu's daemons the cluster's record expects, each with the live processes found for it."""
        ...


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


class LiveKernel:
    """The running kernel."""

    def daemons(self, cl: "Cluster") -> list[Daemon]:
        return daemons.expected(cl.record)

    def observe(self, names: list[str]) -> dict[str, Observed | None]:
        out: dict[str, Observed | None] = {}
        with Sockets() as s:
            for name in names:
                if not netns.exists(name):
                    out[name] = None
                    continue
                try:
                    out[name] = observe.read(name, s)
                except OSError:
                    out[name] = None
                finally:
                    s.release(name)  # one socket open at a time, however many pods
        return out

    def ruleset(self, ns: str, mode: ProxyMode, backend: str) -> str | None:
        if not netns.exists(ns):
            return None
        return proxiers.for_mode(mode).read_back(ns, backend)

    def render(self, node: str, objects: Sequence[PlanObject], mode: ProxyMode, backend: str) -> str:
        proxier = proxiers.for_mode(mode)
        scratch = f"emu-doctor-{os.getpid()}-{secrets.token_hex(3)}"
        netns.create(scratch)
        try:
            try:  # what its sync writes on a first sync, by the drivers a sync uses
                drivers.apply([dataclasses.replace(o, netns=scratch) for o in objects])  # type: ignore[type-var]
            except drivers.ToolFailed as e:
                raise RuntimeError(f"loading the desired rules of {node} failed: {e.stderr.strip()[:500]}") from None
            return proxier.read_back(scratch, backend) or ""
        finally:
            netns.remove(scratch)

    def route_get(self, ns: str, ip: str) -> str | None:
        if not netns.exists(ns):
            return None
        r = subprocess.run(["ip", "-n", ns, "route", "get", ip], capture_output=True, text=True)
        words = (r.stdout.splitlines()[0] if r.stdout.strip() else "").split()
        if "uid" in words:  # `uid 0` and the `cache` line say nothing about the path
            i = words.index("uid")
            del words[i:i + 2]
        return " ".join(words) or (r.stderr.strip() or None)

    def conntrack(self, ns: str) -> tuple[int, int] | None:
        def read() -> tuple[int | None, int | None]:  # /proc/sys/net is the opening thread's namespace's
            return _read_int(f"{CONNTRACK_DIR}/nf_conntrack_count"), _read_int(f"{CONNTRACK_DIR}/nf_conntrack_max")

        if not netns.exists(ns):
            return None
        count, limit = netns.run_in(ns, read)
        return None if count is None or limit is None else (count, limit)

    def probe(self, cl: "Cluster", p: Probe, timeout: float) -> dict[str, Any]:
        from emu.observe import probing, targets

        src, dst = targets.resolve(cl, p.src), targets.resolve(cl, p.dst)
        r: dict[str, Any] = {}
        for tries in (1, 2):  # a cold path (neighbour resolution) may cost the first probe its answer
            try:
                r = _df_echo(cl, src, dst, p, timeout) if p.df and p.proto == "icmp" else \
                    probing._one(cl, src, dst, p.proto, p.port, p.size, p.df, timeout)
            except OSError as e:  # the source's namespace is gone: the routes check names it
                r = {"ok": False, "verdict": "error", "detail": f"{e.strerror or e}: {src.netns}"}
            r["tries"] = tries
            if r["ok"] or r["verdict"] in ("frag-needed", "refused"):
                break
        return r

    def dns(self, cl: "Cluster", pod: str, name: str, timeout: float) -> dict[str, Any]:
        from emu.addons.dns import probe as dns_probe

        try:
            return dns_probe.probe_dns(cl, pod, name, "A", timeout=timeout, attempts=2)
        except OSError as e:  # the pod's namespace is gone: the routes check names it
            return {"ok": False, "queries": [], "addresses": [], "nameservers": [], "error": str(e)}


def _df_echo(cl: "Cluster", src: Any, dst: Any, p: Probe, timeout: float) -> dict[str, Any]:
    """An ICMP echo with DF in IP_PMTUDISC_PROBE mode: sent at its full size whatever path MTU the pod's kernel
    learned from an earlier frag-needed (a fixed MTU would otherwise look broken until that cache expires)."""
    from emu.observe import probe, targets

    r = probe.echo(src.netns, dst.ip, p.size or 0, probe.IP_PMTUDISC_PROBE, timeout, None, 1).to_dict()
    if r.get("answered_by"):
        r["answered_by"] = targets.who(cl, r["answered_by"]) or r["answered_by"]
    icmp = r.get("icmp")
    if icmp and icmp.get("sender") not in (None, "local"):
        icmp["sender_name"] = targets.who(cl, icmp["sender"])
    return r
