"""A pod spec's DNS fields as the API server validates them (pkg/apis/core/validation: validateDNSPolicy,
validatePodDNSConfig) with kubelet's resolv.conf limits (pkg/kubelet/network/dns: glibc's MAXNS, the search line's
length), and emu's own refusal of text that would forge another resolv.conf line.  emu.addons.dns.resolvconf writes
what passes."""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from emu.model.documents import DNS_SUBDOMAIN

LAYER = "model"

POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
MAX_NAMESERVERS = 3  # glibc's MAXNS, validation.MaxDNSNameservers
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048
OPTION_TEXT = re.compile(r"^[!-~]{1,256}\Z")  # printable ASCII, no space


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
        nameservers = cfg.get("nameservers") or []
        if not isinstance(nameservers, list):
            out.append(("dnsConfig.nameservers", "must be a list of IP addresses"))
            nameservers = []
        for i, s in enumerate(nameservers):
            try:
                ipaddress.ip_address(str(s))
            except ValueError:
                out.append((f"dnsConfig.nameservers[{i}]", f"{s!r} must be a valid IP address"))
        if len(nameservers) > MAX_NAMESERVERS:
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
        options = cfg.get("options") or []
        if not isinstance(options, list):
            out.append(("dnsConfig.options", "must be a list of options (name, value)"))
            options = []
        for i, o in enumerate(options):
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
