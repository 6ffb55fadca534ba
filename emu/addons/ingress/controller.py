"""The ingress controller of a running cluster: nginx (the Debian package's binary) running inside the
`ingress-nginx-controller` pod's network namespace, configured from the cluster's Ingresses, reloaded (SIGHUP, as
ingress-nginx reloads) when they, their Services' endpoints or their Secrets change.

Files live in <record>/ingress (emu.addons.ingress.nginxproc, which also runs nginx): nginx.conf, certs/ (PEM files;
keys 0600), access.log and error.log (ingress-nginx's upstreaminfo log format), warnings.json.  The master runs as
root (it binds 80/443 and reads the certificates and keys while loading the configuration); its workers run as
nobody:nogroup and open no file (emu.addons.ingress.nginxconf), so they need no access to this directory.  Every
configuration passes emu.addons.ingress.nginxsafe.confine before nginx or `nginx -t` reads it.

The external host's /etc/hosts (/etc/netns/<external>/hosts, which `ip netns exec` binds over /etc/hosts) names
every Ingress host at the controller's address, as a user testing an ingress edits /etc/hosts; with cluster DNS the
external resolver answers those names too."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from emu.addons.ingress import addon, certs, nginxconf, nginxproc
from emu.addons.ingress.model import Backend, Ingress, Secret, TLS
from emu.addons.ingress.nginxproc import COMPONENT, read_file, write_file
from emu.alloc import endpoints as eps
from emu.apply import processes, state
from emu.model import names

ETC_NETNS = processes.etc_netns()  # one reading of EMU_ETC_NETNS, in processes


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


# --- the configuration ----------------------------------------------------------------------------------------------


def _resolver(cl: Any):  # type: ignore[no-untyped-def]
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


def _tls_secret_name(ing: Ingress, host: str) -> TLS | None:
    """extractTLSSecretName: the TLS entry listing the host, else one whose wildcard host covers it."""
    for t in ing.tls:
        if host in t.hosts:
            return t
    for t in ing.tls:
        if any(certs.host_matches(host, (h,)) for h in t.hosts):
            return t
    return None


class _Material:
    """Certificates on disk: each Secret's PEM files (self-signed ones made once for their hosts) and the default."""

    def __init__(self, cl: Any) -> None:
        self.dir = os.path.join(nginxproc.directory(cl.record), "certs")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.secrets = {s.key: s for s in cl.topology.secrets}
        self.self_signed_hosts = _self_signed_hosts(cl)
        self.info: dict[str, certs.CertInfo] = {}

    def default(self) -> nginxconf.Certificate:
        crt, key = os.path.join(self.dir, "default-fake-certificate.pem"), os.path.join(self.dir, "default.key")
        if not (os.path.exists(crt) and os.path.exists(key)):
            c, k = certs.fake_certificate()
            write_file(key, k, 0o600)
            write_file(crt, c, 0o644)
        return nginxconf.Certificate(crt, key, "")

    def secret(self, s: Secret) -> tuple[str, str] | None:
        base = os.path.join(self.dir, f"{s.namespace}-{s.name}")
        if s.self_signed:
            want = self.self_signed_hosts.get(s.key, [])
            meta = base + ".hosts"
            have = read_file(meta)
            if not want:
                return None
            if have != json.dumps(want) or not os.path.exists(base + ".crt"):
                c, k = certs.self_signed(want)
                write_file(base + ".key", k, 0o600)
                write_file(base + ".crt", c, 0o644)
                write_file(meta, json.dumps(want), 0o644)
        else:
            assert s.cert_pem is not None and s.key_pem is not None
            write_file(base + ".key", s.key_pem, 0o600)
            write_file(base + ".crt", s.cert_pem, 0o644)
        return base + ".crt", base + ".key"

    def cert_for(self, ing: Ingress, host: str) -> tuple[nginxconf.Certificate | None, str | None]:
        t = _tls_secret_name(ing, host)
        if t is None:
            return None, None
        if not t.secret_name:
            return None, f"host {host!r} is listed in the TLS section of Ingress {ing.key} but secretName is " \
                         "empty: using the default certificate"
        key = f"{ing.namespace}/{t.secret_name}"
        s = self.secrets.get(key)
        if s is None or s.type != "kubernetes.io/tls":
            return None, f"Error getting SSL certificate {key!r}: local SSL certificate {key} was not found. " \
                         "Using default certificate"
        paths = self.secret(s)
        if paths is None:
            return None, f"Secret {key} asks for a self-signed certificate but no Ingress TLS entry names a host"
        with open(paths[0]) as f:
            pem = f.read()
        if s.cert_pem is not None and not certs.key_matches(pem, s.key_pem or ""):
            return None, f"Secret {key}: tls.key does not match tls.crt: using the default certificate"
        inf = self.info.setdefault(key, certs.info(pem))
        if not certs.host_matches(host, inf.names):
            return None, f"SSL certificate {key!r} does not contain a Common Name or Subject Alternative Name " \
                         f"for server {host!r}: using the default certificate"
        return nginxconf.Certificate(paths[0], paths[1], key), None


def _self_signed_hosts(cl: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ing in served(cl):
        for t in ing.tls:
            if t.secret_name:
                hs = out.setdefault(f"{ing.namespace}/{t.secret_name}", [])
                hs += [h for h in t.hosts if h not in hs]
    return out


def desired(cl: Any) -> tuple[nginxconf.Config, str]:
    """The controller's configuration (and nginx.conf) for the cluster as it is now; writes certificate files."""
    mat = _Material(cl)
    cfg = nginxconf.servers(served(cl), _resolver(cl), mat.cert_for)
    return cfg, nginxconf.render(cfg, nginxproc.directory(cl.record), mat.default())


def _install(cl: Any) -> str:
    """Write nginx.conf (confined and tested by nginx itself first); return its checksum."""
    d = nginxproc.directory(cl.record)
    nginxproc.make_dirs(d)
    cfg, text = desired(cl)
    want = nginxproc.write_config(d, text)
    write_file(os.path.join(d, "warnings.json"), json.dumps(list(cfg.warnings)), 0o644)
    return want


def start(cl: Any) -> None:
    """Up (or the first Ingress applied): nginx in the controller pod; the external host's /etc/hosts."""
    key = controller_pod(cl)
    if key is None:
        stop(cl.record)
        return
    pp = cl.plan.pod(key)
    d = nginxproc.directory(cl.record)
    want = _install(cl)
    _write_hosts(cl)
    if nginxproc.pids(cl.record):
        return sync(cl)
    proc = nginxproc.spawn(d, pp.netns.name)
    cl.record.set_pid(COMPONENT, proc.pid)
    cl.record.save()
    nginxproc.wait_checksum(pp.netns.name, want, d, nginxproc.START_TIMEOUT, proc)


def sync(cl: Any) -> None:
    """After emu apply/delete/mark: a new nginx.conf and a reload (only when the configuration changed)."""
    key = controller_pod(cl)
    if key is None:
        stop(cl.record)
        return
    pids = nginxproc.pids(cl.record)
    if not pids:
        return start(cl)
    d = nginxproc.directory(cl.record)
    old = read_file(os.path.join(d, "nginx.conf")) or ""
    want = _install(cl)
    _write_hosts(cl)
    if nginxconf.checksum(old) == want:
        return
    nginxproc.reload(pids, cl.plan.pod(key).netns.name, want, d)


def stop(rec: state.Record) -> None:
    """Down: nginx (SIGQUIT: graceful, as `nginx -s quit`; SIGKILL after 3 s), then the hosts file."""
    nginxproc.stop(rec)
    for path in rec.files(COMPONENT):
        processes.remove_etc(path)
    rec.set_files(COMPONENT, [])
    rec.set_pid(COMPONENT, None)
    if os.path.isdir(rec.dir):
        rec.save()


# --- the external host's /etc/hosts ---------------------------------------------------------------------------------


def _hosts_path(cluster: str) -> str:
    return os.path.join(ETC_NETNS, names.external_netns(cluster), "hosts")


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


def _write_hosts(cl: Any) -> None:
    rec = cl.record
    path = _hosts_path(rec.name)
    if path not in rec.files(COMPONENT):
        rec.set_files(COMPONENT, [*rec.files(COMPONENT), path])
        rec.save()  # ownership first
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_file(path, hosts_text(external_names(cl)), 0o644)


def warnings(rec: state.Record) -> list[str]:
    text = read_file(os.path.join(nginxproc.directory(rec), "warnings.json"))
    return list(json.loads(text)) if text else []


def config_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pids(rec: state.Record) -> set[int]:
    """The live nginx master processes of this cluster's ingress controller."""
    return nginxproc.pids(rec)
