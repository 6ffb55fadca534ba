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
from typing import Any

from emu.addons.ingress import certs, nginxconf, nginxproc, routing
from emu.addons.ingress.routing import controller_pod, external_names, hosts_text, served
from emu.addons.ingress.model import Ingress, Secret
from emu.addons.ingress.nginxproc import COMPONENT, read_file, write_file
from emu.apply import processes, state
from emu.model import names

ETC_NETNS = processes.etc_netns()  # one reading of EMU_ETC_NETNS, in processes


# --- the configuration ----------------------------------------------------------------------------------------------


class _Material:
    """Certificates on disk: each Secret's PEM files (self-signed ones made once for their hosts) and the default."""

    def __init__(self, cl: Any) -> None:
        self.dir = os.path.join(nginxproc.directory(cl.record), "certs")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.secrets = {s.key: s for s in cl.topology.secrets}
        self.self_signed_hosts = routing.self_signed_hosts(cl)
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
        s, warning = routing.choose_secret(ing, host, self.secrets, self.self_signed_hosts)
        if s is None:
            return None, warning
        key = s.key
        paths = self.secret(s)
        assert paths is not None  # choose_secret refuses a self-signed Secret without hosts
        with open(paths[0]) as f:
            pem = f.read()
        if s.cert_pem is not None and not certs.key_matches(pem, s.key_pem or ""):
            return None, f"Secret {key}: tls.key does not match tls.crt: using the default certificate"
        inf = self.info.setdefault(key, certs.info(pem))
        if not routing.host_matches(host, inf.names):
            return None, f"SSL certificate {key!r} does not contain a Common Name or Subject Alternative Name " \
                         f"for server {host!r}: using the default certificate"
        return nginxconf.Certificate(paths[0], paths[1], key), None


def desired(cl: Any) -> tuple[nginxconf.Config, str]:
    """The controller's configuration (and nginx.conf) for the cluster as it is now; writes certificate files."""
    mat = _Material(cl)
    cfg = nginxconf.servers(served(cl), routing.resolver(cl), mat.cert_for)
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
