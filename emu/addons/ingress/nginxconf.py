"""Ingresses into nginx servers and locations, and those into nginx.conf, as ingress-nginx computes and renders them
(internal/ingress/controller: createServers, updateServerLocations; controller/template: buildLocation,
buildProxyPass; rootfs/etc/nginx/template/nginx.tmpl).

Pure: `servers` turns the model into data, `render` turns data into the text nginx reads.  One deviation: nginx here
has no Lua, so each backend is a plain `upstream` block named as ingress-nginx names backends
(`<namespace>-<service>-<port>`) holding the ready endpoints, where ingress-nginx proxies to `upstream_balancer` and
picks the endpoint in Lua (round robin by default, as nginx's own upstream does).

Every string that comes from a manifest is written as one quoted nginx token (emu.addons.ingress.nginxsafe: `quote`, or
`literal` where nginx must not expand `$`, as nginx.tmpl uses `quote` and `escapeLiteralDollar`), so no value can
end its directive; the rewrite target stays unquoted upstream but is quoted here.  Further differences that keep nginx
away from host files: workers run as an unprivileged user (`user nobody nogroup`, where ingress-nginx runs as
www-data inside its own container filesystem), and request bodies and responses are buffered in memory only
(client_body_buffer_size = client_max_body_size = 1m, the proxy-body-size default; proxy_max_temp_file_size 0), so
workers never open a file: the temp paths exist only because nginx requires them."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable

from emu.addons.ingress.nginxsafe import WORKER_GROUP, WORKER_USER, literal, quote
from emu.addons.ingress.model import FORCE_SSL_REDIRECT, REWRITE_TARGET, SSL_REDIRECT, USE_REGEX, Backend, Ingress

LAYER = "plan"

DEFAULT_SERVER = "_"
DEFAULT_UPSTREAM = "upstream-default-backend"
ROOT = "/"
STATUS_PORT = 10246  # ingress-nginx's internal status server (127.0.0.1:10246: /healthz, /nginx_status)
HEALTH_PORT = 10254  # the controller's /healthz (the readiness probe's port)
REDIRECT_CODE = 308  # http-redirect-code default (ssl-redirect)
LOG_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
              '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
              '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time '
              '$upstream_status $req_id')  # ingress-nginx's log-format-upstream default


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str  # <namespace>-<service>-<port>
    servers: tuple[str, ...]  # ready endpoints "ip:port"; empty: 503


@dataclass(frozen=True, slots=True)
class Location:
    path: str
    path_type: str
    ingress: str = ""  # ns/name ("" for the default backend)
    service: str = ""
    port: str = ""
    upstream: Upstream | None = None  # None: the default backend (404)
    rewrite_target: str | None = None
    use_regex: bool = False
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    ingress_path: str = ""  # the path as written, before normalisation

    @property
    def needs_rewrite(self) -> bool:
        return bool(self.rewrite_target) and self.rewrite_target != self.path


@dataclass(frozen=True, slots=True)
class Certificate:
    cert: str  # PEM file paths
    key: str
    secret: str  # "ns/name", or "" for the controller's default (fake) certificate


@dataclass(frozen=True, slots=True)
class Server:
    hostname: str
    locations: tuple[Location, ...]
    certificate: Certificate | None = None  # None: the default certificate (and no ssl-redirect)

    @property
    def enforce_regex(self) -> bool:
        """enforceRegexModifier: a rewrite or use-regex anywhere in the server makes every location a regex."""
        return any(loc.needs_rewrite or loc.use_regex for loc in self.locations)


@dataclass(frozen=True, slots=True)
class Config:
    servers: tuple[Server, ...]
    upstreams: tuple[Upstream, ...]
    warnings: tuple[str, ...] = field(default=())


UpstreamResolver = Callable[[str, Backend], "Upstream | None"]  # (namespace, backend) -> upstream (None: no Service)
CertResolver = Callable[[Ingress, str], "tuple[Certificate | None, str | None]"]  # (ingress, host) -> cert, warning


def upstream_name(namespace: str, backend: Backend) -> str:
    return f"{namespace}-{backend.service}-{backend.port_text}"


def _location(ing: Ingress, path: str, path_type: str, backend: Backend, resolve: UpstreamResolver,
              warnings: list[str]) -> Location:
    up = resolve(ing.namespace, backend)
    if up is None:
        warnings.append(f"Ingress {ing.key}: Service {ing.namespace}/{backend.service} port {backend.port_text} "
                        "not found: requests get 503")
        up = Upstream(upstream_name(ing.namespace, backend), ())
    return Location(path, path_type, ing.key, backend.service, backend.port_text, up,
                    ing.annotation(REWRITE_TARGET), ing.flag(USE_REGEX, False), ing.flag(SSL_REDIRECT, True),
                    ing.flag(FORCE_SSL_REDIRECT, False), path)


def _default_root() -> Location:
    return Location(ROOT, "Prefix", ingress_path=ROOT)


def _normalize_prefix(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def update_server_locations(locations: list[Location]) -> list[Location]:
    """updateServerLocations: a Prefix path /foo becomes `location /foo/` plus an Exact `location = /foo`, unless
    it is `/`, needs a rewrite, uses regex, or an Exact location of that path exists already."""
    exact = {loc.path for loc in locations if loc.path_type == "Exact"}
    out = []
    for loc in locations:
        if loc.path == ROOT or loc.path_type != "Prefix" or loc.needs_rewrite or loc.use_regex:
            out.append(loc)
            continue
        out.append(replace(loc, path=_normalize_prefix(loc.path)))
        if loc.path not in exact:
            out.append(replace(loc, path_type="Exact"))
    return out


def _sorted(locations: list[Location]) -> tuple[Location, ...]:
    """createServers: sorted by path descending, then (stable) by path length descending."""
    locs = sorted(locations, key=lambda loc: loc.path, reverse=True)
    return tuple(sorted(locs, key=lambda loc: len(loc.path), reverse=True))


def servers(ingresses: list[Ingress], resolve: UpstreamResolver, cert_for: CertResolver) -> Config:
    """The servers ingress-nginx builds from its Ingresses (in creation order: the first definition of a host's
    path wins, as ingress-nginx keeps the oldest)."""
    warnings: list[str] = []
    hosts: dict[str, list[Location]] = {DEFAULT_SERVER: []}
    roots: dict[str, Location] = {}
    certs: dict[str, Certificate | None] = {}
    for ing in ingresses:
        if ing.default_backend is not None:
            root = _location(ing, ROOT, "Prefix", ing.default_backend, resolve, warnings)
            roots.setdefault(DEFAULT_SERVER, root)
            for rule in ing.rules:
                if rule.host:
                    roots.setdefault(rule.host, root)
        for rule in ing.rules:
            host = rule.host or DEFAULT_SERVER
            locs = hosts.setdefault(host, [])
            for p in rule.paths:
                if any(loc.ingress_path == p.path and loc.path_type == p.path_type for loc in locs):
                    warnings.append(f"Ingress {ing.key}: path {p.path} ({p.path_type}) on host "
                                    f"{rule.host or '*'} is already defined by an earlier Ingress: ignored")
                    continue
                locs.append(_location(ing, p.path, p.path_type, p.backend, resolve, warnings))
            if host != DEFAULT_SERVER and host not in certs:
                cert, warning = cert_for(ing, host)
                if cert is not None or any(host in t.hosts for t in ing.tls):
                    certs[host] = cert
                if warning:
                    warnings.append(warning)
    out, upstreams = [], {}
    for host, locs in hosts.items():
        if not any(loc.path == ROOT and loc.path_type == "Prefix" for loc in locs):
            locs = locs + [roots.get(host, _default_root())]  # an Ingress's defaultBackend, else the 404 one
        locs = update_server_locations(locs)
        for loc in locs:
            if loc.upstream is not None:
                upstreams.setdefault(loc.upstream.name, loc.upstream)
        out.append(Server(host, _sorted(locs), certs.get(host)))
    out.sort(key=lambda s: (s.hostname != DEFAULT_SERVER, s.hostname))
    return Config(tuple(out), tuple(sorted(upstreams.values(), key=lambda u: u.name)), tuple(warnings))


# --- nginx.conf -----------------------------------------------------------------------------------------------------


def _comment(s: str) -> str:
    """Text for a `#` comment: one line whatever `s` holds."""
    return "".join(c if c.isprintable() else "?" for c in s)


def build_location(loc: Location, enforce_regex: bool) -> str:
    if enforce_regex:
        return f"~* {quote('^' + loc.path)}"
    if loc.path_type == "Exact":
        return f"= {quote(loc.path)}"
    return quote(loc.path)


def _location_text(server: Server, loc: Location, enforce_regex: bool) -> list[str]:
    lines = [f"        location {build_location(loc, enforce_regex)} {{"]
    if loc.upstream is None:
        lines += [f'            set $proxy_upstream_name {literal(DEFAULT_UPSTREAM)};',
                  "            return 404;", "        }"]
        return lines
    ns, name = loc.ingress.split("/", 1)
    lines += [f"            set $namespace      {literal(ns)};",
              f"            set $ingress_name   {literal(name)};",
              f"            set $service_name   {literal(loc.service)};",
              f"            set $service_port   {literal(loc.port)};",
              f"            set $location_path  {literal(loc.ingress_path)};",
              f"            set $proxy_upstream_name {literal(loc.upstream.name)};"]
    redirect = loc.force_ssl_redirect or (loc.ssl_redirect and server.certificate is not None
                                          and server.certificate.secret != "")
    if redirect:  # ingress-nginx does this in Lua (rewrite phase): http -> https with http-redirect-code
        lines += ["            if ($scheme = http) {",
                  f"                return {REDIRECT_CODE} https://$best_http_host$request_uri;",
                  "            }"]
    if not loc.upstream.servers:
        lines += ["            return 503;", "        }"]
        return lines
    lines += ["            proxy_http_version 1.1;",
              "            proxy_set_header Host              $best_http_host;",
              "            proxy_set_header Upgrade           $http_upgrade;",
              "            proxy_set_header Connection        $connection_upgrade;",
              "            proxy_set_header X-Request-ID      $req_id;",
              "            proxy_set_header X-Real-IP         $remote_addr;",
              "            proxy_set_header X-Forwarded-For   $remote_addr;",
              "            proxy_set_header X-Forwarded-Host  $best_http_host;",
              "            proxy_set_header X-Forwarded-Port  $server_port;",
              "            proxy_set_header X-Forwarded-Proto $scheme;",
              "            proxy_set_header X-Forwarded-Scheme $scheme;",
              "            proxy_set_header X-Scheme          $scheme;",
              '            proxy_set_header Proxy             "";',
              "            proxy_connect_timeout 5s;",
              "            proxy_next_upstream error timeout;"]
    if loc.needs_rewrite:  # buildProxyPass: the whole URI becomes the target when the regex matches
        assert loc.rewrite_target is not None
        lines.append(f"            rewrite {quote('(?i)' + loc.path)} {quote(loc.rewrite_target)} break;")
    lines += [f"            proxy_pass {quote('http://' + loc.upstream.name)};", "        }"]
    return lines


def render(cfg: Config, directory: str, default_cert: Certificate) -> str:
    """nginx.conf for a controller whose files live in `directory`.  The first line carries the checksum the
    status server returns, so a reload can be confirmed."""
    body = _render_body(cfg, directory, default_cert)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    return f"# emu ingress-nginx configuration, checksum {digest}\n" + body.replace("@CHECKSUM@", digest)


def checksum(text: str) -> str:
    first = text.split("\n", 1)[0]
    return first.rsplit(" ", 1)[-1]


def _render_body(cfg: Config, d: str, default_cert: Certificate) -> str:
    def at(name: str) -> str:
        return quote(f"{d}/{name}")

    out = ["# Rendered by emu from the cluster's Ingresses, the way ingress-nginx renders nginx.tmpl.",
           f"user {WORKER_USER} {WORKER_GROUP};", "worker_processes 1;", f"pid {at('nginx.pid')};", "",
           "events {", "    worker_connections 1024;", "    multi_accept on;", "}", "", "http {",
           f"    client_body_temp_path {at('tmp/client-body')};", f"    proxy_temp_path {at('tmp/proxy')};",
           f"    fastcgi_temp_path {at('tmp/fastcgi')};", f"    uwsgi_temp_path {at('tmp/uwsgi')};",
           f"    scgi_temp_path {at('tmp/scgi')};",
           "    client_body_buffer_size 1m;", "    client_max_body_size 1m;", "    proxy_max_temp_file_size 0;",
           "    default_type text/html;", "    server_tokens off;", "    server_name_in_redirect off;",
           "    port_in_redirect off;", "    absolute_redirect off;", "    sendfile on;", "    keepalive_timeout 75s;",
           f"    log_format upstreaminfo '{LOG_FORMAT}';", f"    access_log {at('access.log')} upstreaminfo;",
           f"    error_log {at('error.log')} notice;",
           '    geo $literal_dollar {', '        default "$";', '    }',
           "    map $http_host $best_http_host {", "        default $http_host;", "        '' $host;", "    }",
           "    map $http_upgrade $connection_upgrade {", "        default upgrade;", "        '' close;", "    }",
           "    map $request_id $req_id {", "        default $request_id;", "    }",
           "    ssl_protocols TLSv1.2 TLSv1.3;", "    ssl_session_cache shared:SSL:1m;",
           f"    ssl_certificate     {quote(default_cert.cert)};",
           f"    ssl_certificate_key {quote(default_cert.key)};", ""]
    for up in cfg.upstreams:
        if not up.servers:
            continue
        out.append(f"    upstream {quote(up.name)} {{")
        out += [f"        server {quote(s)} max_fails=0;" for s in up.servers]
        out += ["    }", ""]
    for server in cfg.servers:
        default = server.hostname == DEFAULT_SERVER
        flag = " default_server backlog=4096" if default else ""  # listen options go on one server only
        out += [f"    ## start server {_comment(server.hostname)}", "    server {",
                f"        server_name {quote(server.hostname) if not default else '_'};",
                f"        listen 80{flag};", f"        listen 443{flag} ssl http2;",
                '        set $proxy_upstream_name "-";', '        set $proxy_alternative_upstream_name "";']
        if server.certificate is not None:
            out += [f"        # certificate from Secret {_comment(server.certificate.secret or '(default)')}",
                    f"        ssl_certificate     {quote(server.certificate.cert)};",
                    f"        ssl_certificate_key {quote(server.certificate.key)};"]
        enforce = server.enforce_regex
        for loc in server.locations:
            out += _location_text(server, loc, enforce)
        out += ["    }", f"    ## end server {_comment(server.hostname)}", ""]
    out += ["    # the status server (ingress-nginx: 127.0.0.1:10246)", "    server {",
            f"        listen 127.0.0.1:{STATUS_PORT};", "        access_log off;",
            "        location /healthz { return 200; }",
            "        location /nginx_status { stub_status on; }",
            '        location = /configuration/checksum { default_type text/plain; return 200 "@CHECKSUM@"; }',
            "        location / { return 404; }", "    }", "",
            "    # the controller's health endpoint (readiness probe port)", "    server {",
            f"        listen {HEALTH_PORT};", "        access_log off;",
            '        location /healthz { default_type text/plain; return 200 "ok"; }',
            "        location / { return 404; }", "    }", "}", ""]
    return "\n".join(out)
