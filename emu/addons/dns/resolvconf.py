"""A pod's /etc/resolv.conf as kubelet computes it (pkg/kubelet/network/dns/dns.go: getPodDNSType, GetPodDNS,
appendDNSConfig, mergeDNSOptions, formDNSConfigFitsLimits) and containerd writes it (search, nameserver, options)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emu.addons.dns.validation import MAX_NAMESERVERS, MAX_SEARCH_CHARS, MAX_SEARCHES

LAYER = "plan"

DEFAULT_OPTIONS = ("ndots:5",)


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
