"""The ingress controller of a running cluster: nginx (the Debian package's binary) running inside the
`ingress-nginx-controller` pod's network namespace, configured from the cluster's Ingresses, reloaded (SIGHUP, as
ingress-nginx reloads) when they, their Services' endpoints or their Secrets change.

Files live in <record>/ingress (mode 0700, root's): nginx.conf, certs/ (PEM files; keys 0600), access.log and
error.log (ingress-nginx's upstreaminfo log format), nginx.pid (written by nginx itself: its `pid` directive).  The
master runs as root (it binds 80/443 and reads the certificates and keys while loading the configuration); its
workers run as nobody:nogroup and open no file (emu.addons.ingress.nginxconf), so they need no access to this directory.
Every configuration passes emu.addons.ingress.nginxsafe.confine before nginx or `nginx -t` reads it.

The external host's /etc/hosts (/etc/netns/<external>/hosts, which `ip netns exec` binds over /etc/hosts) names
every Ingress host at the controller's address, as a user testing an ingress edits /etc/hosts; with cluster DNS the
external resolver answers those names too."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from emu.alloc import endpoints as eps
from emu.model import names
from emu.apply import netns, processes, state
from emu.errors import ClusterError
from emu.addons.ingress import addon, certs, nginxconf, nginxsafe
from emu.addons.ingress.model import Backend, Ingress, Secret, TLS

ETC_NETNS = processes.etc_netns()  # one reading of EMU_ETC_NETNS, in processes
START_TIMEOUT = 20.0
RELOAD_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Address:
    """Where clients outside the cluster reach the controller: the LoadBalancer IP on ports 80/443, or (NodePort)
    the first node's InternalIP on the Service's node ports."""

    ip: str
    http: int
    https: int
    via: str  # "LoadBalancer" | "NodePort"


def _dir(rec: state.Record) -> str:
    return os.path.join(rec.dir, "ingress")


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
        self.dir = os.path.join(_dir(cl.record), "certs")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.secrets = {s.key: s for s in cl.topology.secrets}
        self.self_signed_hosts = _self_signed_hosts(cl)
        self.info: dict[str, certs.CertInfo] = {}

    def default(self) -> nginxconf.Certificate:
        crt, key = os.path.join(self.dir, "default-fake-certificate.pem"), os.path.join(self.dir, "default.key")
        if not (os.path.exists(crt) and os.path.exists(key)):
            c, k = certs.fake_certificate()
            _write(key, k, 0o600)
            _write(crt, c, 0o644)
        return nginxconf.Certificate(crt, key, "")

    def secret(self, s: Secret) -> tuple[str, str] | None:
        base = os.path.join(self.dir, f"{s.namespace}-{s.name}")
        if s.self_signed:
            want = self.self_signed_hosts.get(s.key, [])
            meta = base + ".hosts"
            have = _read(meta)
            if not want:
                return None
            if have != json.dumps(want) or not os.path.exists(base + ".crt"):
                c, k = certs.self_signed(want)
                _write(base + ".key", k, 0o600)
                _write(base + ".crt", c, 0o644)
                _write(meta, json.dumps(want), 0o644)
        else:
            assert s.cert_pem is not None and s.key_pem is not None
            _write(base + ".key", s.key_pem, 0o600)
            _write(base + ".crt", s.cert_pem, 0o644)
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
    return cfg, nginxconf.render(cfg, _dir(cl.record), mat.default())


# --- the process ----------------------------------------------------------------------------------------------------


def _write(path: str, text: str, mode: int) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _is_ours(pid: int, conf: str) -> bool:
    argv = processes.cmdline(pid)
    if argv is None:
        return False
    # nginx retitles its master "nginx: master process nginx -p ... -c CONF ...": one string with spaces
    text = " ".join(argv)
    return text.startswith("nginx") and f"-c {conf}" in text


def _pids(rec: state.Record) -> set[int]:
    d = _dir(rec)
    conf = os.path.join(d, "nginx.conf")
    pids = {rec.ingress_pid} if rec.ingress_pid else set()
    for f in ("master.pid", "nginx.pid"):
        try:
            pids.add(int((_read(os.path.join(d, f)) or "").strip()))
        except ValueError:
            pass
    return {p for p in pids if _is_ours(p, conf)}


def _log_tail(d: str) -> str:
    text = _read(os.path.join(d, "error.log")) or _read(os.path.join(d, "nginx.out")) or "(no error.log)"
    return " | ".join(text.strip().splitlines()[-4:])


def _test(conf: str, d: str) -> None:
    r = subprocess.run(["nginx", "-t", "-q", "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ClusterError(f"nginx rejected the ingress configuration {conf}: "
                           f"{' | '.join(r.stderr.strip().splitlines()[-3:])}")


def _status(ns: str, path: str, port: int = nginxconf.STATUS_PORT) -> str | None:
    def get() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                return str(r.read().decode())
        except OSError:
            return None
    return netns.run_in(ns, get)


def _wait_checksum(ns: str, want: str, d: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while _status(ns, "/configuration/checksum") != want:
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise ClusterError(f"the ingress controller (nginx) did not {'start' if proc else 'reload'}: "
                               f"{_log_tail(d)}")
        time.sleep(0.05)


def write_config(d: str, text: str) -> str:
    """The only writer of <d>/nginx.conf: confined to `d` (nginxsafe.confine), then tested by `nginx -t`, then
    put in place; returns the configuration's checksum.  Nothing is written when either check fails."""
    nginxsafe.confine(text, d)
    conf = os.path.join(d, "nginx.conf")
    _write(conf + ".new", text, 0o600)
    try:
        _test(conf + ".new", d)
    except ClusterError:
        os.unlink(conf + ".new")
        raise
    os.replace(conf + ".new", conf)
    return nginxconf.checksum(text)


def _make_dirs(d: str) -> None:
    """The controller's directory and its subdirectories, root's alone (nginx's workers need none of them)."""
    for sub in ("", "tmp", "certs"):
        path = os.path.join(d, sub)
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # made by an older emu with the umask's mode


def _install(cl: Any) -> str:
    """Write nginx.conf (confined and tested by nginx itself first); return its checksum."""
    d = _dir(cl.record)
    _make_dirs(d)
    cfg, text = desired(cl)
    want = write_config(d, text)
    _write(os.path.join(d, "warnings.json"), json.dumps(list(cfg.warnings)), 0o644)
    return want


def start(cl: Any) -> None:
    """Up (or the first Ingress applied): nginx in the controller pod; the external host's /etc/hosts."""
    key = controller_pod(cl)
    if key is None:
        stop(cl.record)
        return
    pp = cl.plan.pod(key)
    d = _dir(cl.record)
    want = _install(cl)
    _write_hosts(cl)
    if _pids(cl.record):
        return sync(cl)
    conf = os.path.join(d, "nginx.conf")
    _write(os.path.join(d, "netns"), pp.netns.name, 0o644)  # where its processes live, for stop()
    with open(os.path.join(d, "nginx.out"), "ab") as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(["ip", "netns", "exec", pp.netns.name, "nginx", "-p", d, "-e",
                                 os.path.join(d, "error.log"), "-c", conf, "-g", "daemon off; master_process on;"],
                                stdin=devnull, stdout=out, stderr=out, start_new_session=True, close_fds=True)
    threading.Thread(target=proc.wait, daemon=True).start()
    _write(os.path.join(d, "master.pid"), f"{proc.pid}\n", 0o644)
    cl.record.ingress_pid = proc.pid
    cl.record.save()
    _wait_checksum(pp.netns.name, want, d, START_TIMEOUT, proc)


def sync(cl: Any) -> None:
    """After emu apply/delete/mark: a new nginx.conf and a reload (only when the configuration changed)."""
    key = controller_pod(cl)
    if key is None:
        stop(cl.record)
        return
    pids = _pids(cl.record)
    if not pids:
        return start(cl)
    d = _dir(cl.record)
    old = _read(os.path.join(d, "nginx.conf")) or ""
    want = _install(cl)
    _write_hosts(cl)
    if nginxconf.checksum(old) == want:
        return
    workers = {w for pid in pids for w in _children(pid)}
    for pid in pids:
        os.kill(pid, signal.SIGHUP)
    _wait_checksum(cl.plan.pod(key).netns.name, want, d, RELOAD_TIMEOUT)
    _wait_retired(workers)


def _nginx_in(ns: str | None) -> list[int]:
    """nginx processes inside the controller pod's namespace (what `ip netns pids` finds: same net namespace)."""
    if not ns:
        return []
    try:
        want = os.stat(os.path.join(netns.NETNS_RUN_DIR, ns)).st_ino
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != want:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().startswith(b"nginx"):
                    out.append(int(entry))
        except OSError:
            continue
    return out


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except (OSError, ValueError):
        return set()


def _wait_retired(workers: set[int], timeout: float = RELOAD_TIMEOUT) -> None:
    """After a reload the old workers finish their requests but must stop accepting: nginx retitles them "worker
    process is shutting down" once their listening sockets are closed.  New connections then reach only workers
    with the new configuration."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = []
        for w in workers:
            title = _read(f"/proc/{w}/cmdline") or ""
            if title.startswith("nginx: worker process") and "shutting down" not in title:
                busy.append(w)
        if not busy:
            return
        time.sleep(0.02)


def stop(rec: state.Record) -> None:
    """Down: nginx (SIGQUIT: graceful, as `nginx -s quit`; SIGKILL after 3 s), then the hosts file."""
    conf = os.path.join(_dir(rec), "nginx.conf")
    for pid in _pids(rec):
        processes.stop(pid, lambda p: _is_ours(p, conf), signal.SIGQUIT, group=True)
    for pid in _nginx_in(_read(os.path.join(_dir(rec), "netns"))):
        os.kill(pid, signal.SIGKILL)  # workers left behind by a master that was killed
    path = _hosts_path(rec.name)
    if path in (rec.etc_files or []):
        processes.remove_etc(path)
        rec.etc_files = [p for p in rec.etc_files if p != path]
    if rec.ingress_pid:
        rec.ingress_pid = None
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
    if path not in rec.etc_files:
        rec.etc_files = sorted(set(rec.etc_files) | {path})
        rec.save()  # ownership first
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write(path, hosts_text(external_names(cl)), 0o644)


def warnings(rec: state.Record) -> list[str]:
    text = _read(os.path.join(_dir(rec), "warnings.json"))
    return list(json.loads(text)) if text else []


def config_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pids(rec: state.Record) -> set[int]:
    """The live nginx master processes of this cluster's ingress controller."""
    return _pids(rec)
