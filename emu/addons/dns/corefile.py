"""The `coredns` ConfigMap's Corefile: the parts that change answers are read (kubernetes zones, `pods`, `ttl`,
`fallthrough`, `forward`, `loadbalance`, the server port), the rest is accepted as CoreDNS accepts it."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

LAYER = "model"

KNOWN_PLUGINS = {"errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload",
                 "loadbalance", "log", "hosts", "rewrite", "debug", "whoami", "template", "autopath", "k8s_external",
                 "bind", "any", "chaos", "metadata", "minimal", "trace", "acl"}
DEFAULT_COREFILE = """.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"""  # kubeadm's default (cmd/kubeadm/app/phases/addons/dns/manifests.go)


class CorefileError(ValueError):
    pass


@dataclass
class Config:
    port: int = 53
    zones: list[str] = field(default_factory=lambda: ["cluster.local."])  # the kubernetes plugin's zones
    cluster_domain: str = "cluster.local."
    pods: str = "disabled"  # disabled | insecure | verified
    ttl: int = 5
    fallthrough: list[str] | None = None  # None: no fallthrough; []: every zone
    forward: list[str] = field(default_factory=list)  # "/etc/resolv.conf" or addresses
    loadbalance: bool = False
    cache: int | None = None
    plugins: list[str] = field(default_factory=list)
    kubernetes: bool = False
    servers: list[str] = field(default_factory=list)  # each server block's address, as written (".:53")

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def _tokens(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        out.extend(re.findall(r"\{|\}|[^\s{}]+", line))
        out.append("\n")
    return out


def parse(text: str) -> Config:
    toks = _tokens(text)
    cfg = Config()
    i, depth, block_keys, current = 0, 0, [], None
    stmt: list[str] = []
    server_seen = False
    while i < len(toks):
        t = toks[i]
        i += 1
        if t == "{":
            if depth == 0:
                if not stmt:
                    raise CorefileError("a block without a server address")
                server_seen = True
                _server(cfg, stmt)
            elif depth == 1:
                current = stmt[0] if stmt else None
                _plugin(cfg, stmt)
            block_keys.append(stmt)
            stmt = []
            depth += 1
        elif t == "}":
            if stmt:
                _statement(cfg, depth, current, stmt)
                stmt = []
            if depth == 0:
                raise CorefileError("unbalanced '}'")
            depth -= 1
            block_keys.pop()
            if depth == 1:
                current = None
        elif t == "\n":
            if stmt:
                _statement(cfg, depth, current, stmt)
                stmt = []
        else:
            stmt.append(t)
    if depth != 0:
        raise CorefileError("unbalanced '{'")
    if not server_seen:
        raise CorefileError("no server block (e.g. `.:53 { ... }`)")
    return cfg


def _server(cfg: Config, stmt: list[str]) -> None:
    m = re.match(r"^(?:dns://)?([^:]*)(?::(\d+))?$", stmt[0])
    if not m:
        raise CorefileError(f"bad server address {stmt[0]!r}")
    cfg.servers.append(" ".join(stmt))
    if m.group(2):
        if not 1 <= int(m.group(2)) <= 65535:
            raise CorefileError(f"bad server address {stmt[0]!r}: the port must be from 1 to 65535")
        cfg.port = int(m.group(2))


def _statement(cfg: Config, depth: int, current: str | None, stmt: list[str]) -> None:
    if depth == 1:
        _plugin(cfg, stmt)
    elif depth == 2 and current == "kubernetes":
        key, args = stmt[0], stmt[1:]
        if key == "pods":
            if not args or args[0] not in ("disabled", "insecure", "verified"):
                raise CorefileError(f"kubernetes: pods takes disabled, insecure or verified, got {args}")
            cfg.pods = args[0]
        elif key == "ttl":
            if not args or not args[0].isdigit() or not 0 <= int(args[0]) <= 3600:
                raise CorefileError(f"kubernetes: ttl takes 0 to 3600 seconds, got {args}")
            cfg.ttl = int(args[0])
        elif key == "fallthrough":
            cfg.fallthrough = [a.rstrip(".") + "." for a in args]
    elif depth == 0:
        raise CorefileError(f"{' '.join(stmt)!r} outside a server block")


def _check_upstream(up: str) -> None:
    """A forward TO as emu can serve it: an IP address (`dns://` allowed, port 53: the server connects to
    (address, 53) inside the namespace) or /etc/resolv.conf (the node's resolver).  CoreDNS also takes other files
    read as resolv.conf, ports and tls://; emu refuses them rather than open a host file or resolve a name on the
    machine's resolver."""
    if up == "/etc/resolv.conf":
        return
    addr = up[len("dns://"):] if up.startswith("dns://") else up
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise CorefileError(f"forward: {up!r} is not an IP address or /etc/resolv.conf (emu forwards to port 53 of "
                            f"an address, or to the node's resolver)") from None


def _plugin(cfg: Config, stmt: list[str]) -> None:
    name, args = stmt[0], stmt[1:]
    if name not in KNOWN_PLUGINS:
        raise CorefileError(f"unknown plugin {name!r}")
    cfg.plugins.append(name)
    if name == "kubernetes":
        cfg.kubernetes = True
        if args:
            cfg.zones = [a.rstrip(".").lower() + "." for a in args]
            cfg.cluster_domain = cfg.zones[0]
    elif name == "forward":
        if len(args) < 2:
            raise CorefileError("forward needs a zone and at least one upstream")
        for up in args[1:]:
            _check_upstream(up)
        cfg.forward = args[1:]
    elif name == "loadbalance":
        cfg.loadbalance = True
    elif name == "cache":
        cfg.cache = int(args[0]) if args and args[0].isdigit() else 3600
