"""kube-router's chain and ipset names (pkg/controllers/netpol: network_policy_controller.go, pod.go, policy.go).

Each name is a prefix plus the first 16 characters of the standard base32 encoding of a sha256 over the parts
kube-router hashes, concatenated.  Chains carry the sync version (kube-router's UnixNano in base 10), so every sync
writes fresh chains and deletes the previous ones in the same transaction; ipsets carry no version and are refreshed
in place (`ipset swap`).  The IP family is hashed in as its API name, "IPv4".
"""
from __future__ import annotations

import base64
import hashlib

from emu.addons.netpol.model import Direction

LAYER = "plan"

POD_FW_PREFIX = "KUBE-POD-FW-"
POLICY_PREFIX = "KUBE-NWPLCY-"
SRC_SET_PREFIX = "KUBE-SRC-"
DST_SET_PREFIX = "KUBE-DST-"
INPUT, FORWARD, OUTPUT = "KUBE-ROUTER-INPUT", "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT"
TOP_LEVEL = (("INPUT", INPUT), ("FORWARD", FORWARD), ("OUTPUT", OUTPUT))  # built-in chain -> kube-router's chain
DEFAULT = "KUBE-NWPLCY-DEFAULT"
COMMON = "KUBE-NWPLCY-COMMON"
TAIL = "KUBE-NWPLCY-TAIL"
FIXED_CHAINS = (INPUT, FORWARD, OUTPUT, DEFAULT, COMMON, TAIL)
OWNED_PREFIXES = ("KUBE-ROUTER-", POLICY_PREFIX, POD_FW_PREFIX)  # chains kube-router owns in the filter table
FAMILY = "IPv4"


def hash16(text: str) -> str:
    """base32(sha256(text))[:16], kube-router's name hash."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def pod_chain(namespace: str, pod: str, version: str) -> str:
    """podFirewallChainName."""
    return POD_FW_PREFIX + hash16(namespace + pod + version)


def policy_chain(namespace: str, name: str, version: str, direction: Direction, split: bool) -> str:
    """networkPolicyChainName.  `split`: the policy has both types and this is its egress half, which emu keeps
    in a chain of its own (kube-router puts both halves in one chain; see rules.py)."""
    extra = "egress" if split and direction is Direction.EGRESS else ""
    return POLICY_PREFIX + hash16(namespace + name + version + FAMILY + extra)


def target_set(namespace: str, name: str, direction: Direction) -> str:
    """The pods a policy selects: KUBE-DST- for ingress (policyDestinationPodIPSetName), KUBE-SRC- for egress
    (policySourcePodIPSetName); the same hash under two prefixes."""
    prefix = DST_SET_PREFIX if direction is Direction.INGRESS else SRC_SET_PREFIX
    return prefix + hash16(namespace + name + FAMILY)


def peer_set(namespace: str, name: str, direction: Direction, rule: int, kind: str) -> str:
    """A rule's peers: kind "pod" (policyIndexed{Source,Destination}PodIPSetName) or "ipblock"
    (policyIndexed{Source,Destination}IPBlockIPSetName); ingress peers are sources, egress peers destinations."""
    prefix = SRC_SET_PREFIX if direction is Direction.INGRESS else DST_SET_PREFIX
    return prefix + hash16(namespace + name + f"{direction.lower}rule" + str(rule) + FAMILY + kind)


def named_port_set(namespace: str, name: str, direction: Direction, rule: int, index: int) -> str:
    """The destination pods that name a port, one set per resolved number
    (policyIndexed{Ingress,Egress}NamedPortIPSetName)."""
    return DST_SET_PREFIX + hash16(namespace + name + f"{direction.lower}rule" + str(rule) + str(index) + FAMILY +
                                   "namedport")


def tmp_set(options: str) -> str:
    """BuildIPSetRestore's scratch set, one per set type: "TMP-" + base32(sha1("tmp:" + options)[:10])."""
    return "TMP-" + base64.b32encode(hashlib.sha1(("tmp:" + options).encode()).digest()[:10]).decode()


def rule_uuid(chain: str, spec: list[str]) -> str:
    """ensureTopLevelChains' addUUIDForRuleSpec: the hash of the chain and the rule spec joined without spaces,
    appended to the rule's comment as " - <uuid>" so kube-router can find the rule again."""
    return hash16(chain + "".join(spec))
