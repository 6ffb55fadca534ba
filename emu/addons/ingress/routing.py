"""What the ingress controller serves, computed purely from the model and the allocations: which pod runs nginx,
which Ingresses it admits, where clients reach it, each host's upstreams and TLS Secret, and the external host's
names (ingress-nginx internal/ingress/controller/controller.go getBackendServers, extractTLSSecretName).  The
controller (emu.addons.ingress.controller) writes and reloads nginx from it; the dry run prints it
(emu.addons.ingress.desired); the DNS addon answers the external names from it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emu.addons.ingress import addon, nginxconf
from emu.addons.ingress.model import Backend, Ingress, Secret, TLS
from emu.alloc import endpoints as eps


@dataclass(frozen=True, slots=True)
class Address:
    """Where clients outside the cluster reach the controller: the LoadBalancer IP on ports 80/443, or (NodePort)
    the first node's InternalIP on the Service's node ports."""

    ip: str
    http: int
    https: int
    via: str  # "LoadBalancer" | "NodePort"


def controller_pod(cl: Any) -> str | None:
    for p in cl.topology.pods:
        if p.namespace == addon.NAMESPACE and p.annotations.get(addon.SERVED_BY) == "nginx":
            return p.key
    return None


def served(cl: Any) -> list[Ingress]:
    return [i for i in cl.topology.ingresses if addon.served_class(i, cl.topology.ingress_classes)]


def address(cl: Any) -> Address | None:
    svc = next((s for s in cl.topology.services if s.namespace == addon.NAMESPACE and s.name == addon.NAME), None)
    if svc is None:
        return None
    a = cl.allocations.services.get(svc.key)
    if a is None:
        return None
    if svc.type == "LoadBalancer" and a.load_balancer_ip is not None:
        return Address(str(a.load_balancer_ip), 80, 443, "LoadBalancer")
    if "80/TCP" in a.node_ports and cl.plan.nodes:  # node ports are keyed "PORT/PROTOCOL"
        return Address(str(cl.plan.nodes[0].ip), a.node_ports["80/TCP"], a.node_ports.get("443/TCP", 0), "NodePort")
    return None


def hosts(cl: Any) -> list[str]:
    out: list[str] = []
    for ing in served(cl):
        for h in [r.host for r in ing.rules] + [h for t in ing.tls for h in t.hosts]:
            if h and not h.startswith("*") and h not in out:
                out.append(h)
    return out


def resolver(cl: Any):  # type: ignore[no-untyped-def]
    by_key = {s.key: s for s in cl.topology.services}

    def resolve(ns: str, backend: Backend) -> nginxconf.Upstream | None:
        svc = by_key.get(f"{ns}/{backend.service}")
        if svc is None:
            return None
        spec = next((p for p in svc.ports if (backend.port_number is not None and p.port == backend.port_number)
                     or (backend.port_name is not None and p.name == backend.port_name)), None)
        if spec is None:
            return None
        port_eps = next((pe for pe in eps.for_service(cl.topology, cl.allocations, svc) if pe.spec == spec), None)
        ready = [f"{e.ip}:{e.port}" for e in (port_eps.endpoints if port_eps else ()) if e.ready]
        return nginxconf.Upstream(nginxconf.upstream_name(ns, backend), tuple(dict.fromkeys(ready)))

    return resolve


def tls_entry(ing: Ingress, host: str) -> TLS | None:
    """extractTLSSecretName: the TLS entry listing the host, else one whose wildcard host covers it."""
    for t in ing.tls:
        if host in t.hosts:
            return t
    for t in ing.tls:
        if any(host_matches(host, (h,)) for h in t.hosts):
            return t
    return None


def self_signed_hosts(cl: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ing in served(cl):
        for t in ing.tls:
            if t.secret_name:
                hs = out.setdefault(f"{ing.namespace}/{t.secret_name}", [])
                hs += [h for h in t.hosts if h not in hs]
    return out


def hosts_text(entries: dict[str, str]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\t\tlocalhost ip6-localhost ip6-loopback",
             "# Ingress hosts at the ingress-nginx controller's address (written by emu)"]
    by_ip: dict[str, list[str]] = {}
    for host, ip in entries.items():
        by_ip.setdefault(ip, []).append(host)
    lines += [f"{ip}\t{' '.join(hs)}" for ip, hs in by_ip.items()]
    return "\n".join(lines) + "\n"


def external_names(cl: Any) -> dict[str, str]:
    """Ingress host -> the controller's address, for the external host's resolver and /etc/hosts."""
    a = address(cl)
    return {h: a.ip for h in hosts(cl)} if a else {}


def choose_secret(ing: Ingress, host: str, secrets: dict[str, Secret],
                  self_signed_hosts: dict[str, list[str]]) -> tuple[Secret | None, str | None]:
    """The TLS Secret serving `host` of `ing` (extractTLSSecretName), or why the default certificate is used: the
    choice the controller makes before it looks at the certificate itself."""
    t = tls_entry(ing, host)
    if t is None:
        return None, None
    if not t.secret_name:
        return None, f"host {host!r} is listed in the TLS section of Ingress {ing.key} but secretName is " \
                     "empty: using the default certificate"
    key = f"{ing.namespace}/{t.secret_name}"
    s = secrets.get(key)
    if s is None or s.type != "kubernetes.io/tls":
        return None, f"Error getting SSL certificate {key!r}: local SSL certificate {key} was not found. " \
                     "Using default certificate"
    if s.self_signed and not self_signed_hosts.get(key):
        return None, f"Secret {key} asks for a self-signed certificate but no Ingress TLS entry names a host"
    return s, None


def host_matches(host: str, names: tuple[str, ...]) -> bool:
    """Go's x509 VerifyHostname for DNS names: exact (case-insensitive), or a `*.` wildcard covering one label."""
    host = host.lower().rstrip(".")
    for n in names:
        n = n.lower().rstrip(".")
        if n == host:
            return True
        if n.startswith("*.") and "." in host and host.split(".", 1)[1] == n[2:] and not host.startswith("*"):
            return True
    return False
