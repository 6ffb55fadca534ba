"""A pod's /etc/resolv.conf as kubelet computes it (pkg/kubelet/network/dns/dns.go: getPodDNSType, GetPodDNS,
appendDNSConfig, mergeDNSOptions, formDNSConfigFitsLimits) and containerd writes it (search, nameserver, options)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from emu.model.documents import DNS_SUBDOMAIN

POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
MAX_NAMESERVERS = 3  # glibc's MAXNS, validation.MaxDNSNameservers
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048
DEFAULT_OPTIONS = ("ndots:5",)
OPTION_TEXT = re.compile(r"^[!-~]{1,256}\Z")  # printable ASCII, no space


@dataclass
class DNSConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def render(self) -> str:
        out = ""
        if self.searches:
            out += f"search {' '.join(self.searches)}\n"
        if self.servers:
            out += "".join(f"nameserver {s}\n" for s in self.servers)
        if self.options:
            out += f"options {' '.join(self.options)}\n"
        return out

    def ndots(self) -> int:
        for o in self.options:
            if o.startswith("ndots:"):
                try:
                    return min(int(o.split(":", 1)[1]), 15)
                except ValueError:
                    pass
        return 1


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def pod_dns_type(policy: str, host_network: bool) -> str:
    """"none" | "cluster" | "host" (kubelet's podDNSNone, podDNSCluster, podDNSHost)."""
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet":
        return "cluster"
    if policy in ("ClusterFirst", "", None) and not host_network:
        return "cluster"
    return "host"


def pod_dns(spec: dict[str, Any], namespace: str, cluster_dns: list[str], domain: str,
            host: DNSConfig) -> DNSConfig:
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    kind = pod_dns_type(policy, bool(spec.get("hostNetwork")))
    cfg = DNSConfig()
    if kind == "cluster" and cluster_dns:
        d = domain.rstrip(".")
        cfg.servers = list(cluster_dns)
        cfg.searches = _unique([f"{namespace}.svc.{d}", f"svc.{d}", d] + host.searches)
        cfg.options = list(DEFAULT_OPTIONS)
    elif kind != "none":
        cfg.servers, cfg.searches, cfg.options = list(host.servers), list(host.searches), list(host.options)
    extra = spec.get("dnsConfig") or {}
    if extra:
        cfg.servers = _unique(cfg.servers + [str(s) for s in extra.get("nameservers") or []])
        cfg.searches = _unique(cfg.searches + [str(s) for s in extra.get("searches") or []])
        cfg.options = merge_options(cfg.options, extra.get("options") or [])
    if len(cfg.servers) > MAX_NAMESERVERS:
        cfg.warnings.append(f"Nameserver limits were exceeded, some nameservers have been omitted, the applied "
                            f"nameserver line is: {' '.join(cfg.servers[:MAX_NAMESERVERS])}")
        cfg.servers = cfg.servers[:MAX_NAMESERVERS]
    if len(cfg.searches) > MAX_SEARCHES or len(" ".join(cfg.searches)) > MAX_SEARCH_CHARS:
        kept: list[str] = []
        for s in cfg.searches:
            if len(kept) >= MAX_SEARCHES or len(" ".join(kept + [s])) > MAX_SEARCH_CHARS:
                break
            kept.append(s)
        cfg.warnings.append(f"Search Line limits were exceeded, some search paths have been omitted, the applied "
                            f"search line is: {' '.join(kept)}")
        cfg.searches = kept
    return cfg


def merge_options(existing: list[str], extra: list[dict[str, Any]]) -> list[str]:
    """mergeDNSOptions: a dnsConfig option replaces an existing one of the same name (Go's map order is random;
    we keep first-seen order)."""
    opts: dict[str, str] = {}
    for op in existing:
        name, _, value = op.partition(":")
        opts[name] = value
    for op in extra:
        if isinstance(op, dict) and op.get("name"):
            v = op.get("value")
            opts[str(op["name"])] = "" if v is None else str(v)
    return [f"{k}:{v}" if v != "" else k for k, v in opts.items()]


def validate(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) problems with a pod spec's DNS fields, as the API server's validation reports them."""
    out = []
    policy = spec.get("dnsPolicy")
    if policy is not None and policy not in POLICIES:
        out.append(("dnsPolicy", f"{policy!r} is not one of {', '.join(POLICIES)}"))
    cfg = spec.get("dnsConfig")
    if cfg is not None and not isinstance(cfg, dict):
        out.append(("dnsConfig", "must be a mapping with nameservers, searches, options"))
        cfg = {}
    if policy == "None" and not (cfg or {}).get("nameservers"):
        out.append(("dnsConfig.nameservers", "must have at least one nameserver when dnsPolicy is None"))
    if cfg:
        import ipaddress
        for i, s in enumerate(cfg.get("nameservers") or []):
            try:
                ipaddress.ip_address(str(s))
            except ValueError:
                out.append((f"dnsConfig.nameservers[{i}]", f"{s!r} must be a valid IP address"))
        if len(cfg.get("nameservers") or []) > MAX_NAMESERVERS:
            out.append(("dnsConfig.nameservers", f"must not have more than {MAX_NAMESERVERS} nameservers"))
        searches = cfg.get("searches") or []
        for i, s in enumerate(searches if isinstance(searches, list) else []):
            # validateDNSSearches: each a DNS-1123 subdomain (a trailing dot allowed); kubelet writes them on one
            # `search` line of the pod's resolv.conf, so a space or newline would forge another line
            if not isinstance(s, str) or len(s.rstrip(".")) > 253 or not DNS_SUBDOMAIN.match(s.rstrip(".")):
                out.append((f"dnsConfig.searches[{i}]", f"{s!r} must be a DNS subdomain"))
        if not isinstance(searches, list) or len(searches) > MAX_SEARCHES:
            out.append(("dnsConfig.searches", f"must be a list of at most {MAX_SEARCHES} domains"))
        elif len(" ".join(str(s) for s in searches)) > MAX_SEARCH_CHARS:
            out.append(("dnsConfig.searches", f"must not have more than {MAX_SEARCH_CHARS} characters in all"))
        for i, o in enumerate(cfg.get("options") or []):
            if not isinstance(o, dict) or not o.get("name"):
                out.append((f"dnsConfig.options[{i}]", "must have a name"))
                continue
            # the API server checks only that a name is there; kubelet writes `name[:value]` into the options
            # line, so whitespace or a control character would forge another resolv.conf line: refused here
            for key in ("name", "value"):
                v = o.get(key)
                if v is not None and (not isinstance(v, (str, int)) or isinstance(v, bool) or
                                      not OPTION_TEXT.match(str(v))):
                    out.append((f"dnsConfig.options[{i}].{key}", f"{v!r} must be printable with no whitespace, "
                                                                  f"at most 256 characters"))
    return out
