"""Kubernetes resource quantities (apimachinery's resource.Quantity), as far as emu needs them: the pod bandwidth
annotations `kubernetes.io/ingress-bandwidth` / `kubernetes.io/egress-bandwidth`, which the kubelet's CRI runtime
parses with resource.ParseQuantity and turns into bits per second with Quantity.Value() (rounded up to an integer).

Grammar (ParseQuantity): an optional sign, digits with at most one `.`, then a suffix: binary SI (Ki Mi Gi Ti Pi
Ei), decimal SI (n u m "" k M G T P E) or a decimal exponent (e3, E-2).  `M` is mega and `m` is milli; there is no
`K`.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

INGRESS_BANDWIDTH = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH = "kubernetes.io/egress-bandwidth"
MIN_BANDWIDTH = 1000  # kubelet/containerd validateBandwidthIsReasonable: 1k ... 1P bits per second
MAX_BANDWIDTH = 10 ** 15
MAX_BURST = 2 ** 32 - 1  # containerd's toCNIBandWidth sends math.MaxUint32 as ingressBurst/egressBurst

_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6), "m": Fraction(1, 10 ** 3), "": Fraction(1),
            "k": Fraction(10 ** 3), "M": Fraction(10 ** 6), "G": Fraction(10 ** 9), "T": Fraction(10 ** 12),
            "P": Fraction(10 ** 15), "E": Fraction(10 ** 18)}
_QUANTITY = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)")
_EXPONENT = re.compile(r"[eE]([+-]?\d+)")


def parse_quantity(s: object) -> Fraction:
    """The exact value of a quantity string; ValueError when ParseQuantity would reject it."""
    if not isinstance(s, str) or not s:
        raise ValueError(f"quantity {s!r} must be a non-empty string")
    m = _QUANTITY.fullmatch(s)
    if not m:
        raise ValueError(f"quantity {s!r} is not a number with an optional suffix (e.g. 10M, 500k, 1Gi)")
    sign, number, suffix = m.groups()
    value = Fraction(number)
    if suffix in _BINARY:
        value *= _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= _DECIMAL[suffix]
    elif e := _EXPONENT.fullmatch(suffix):
        value *= Fraction(10) ** int(e.group(1))
    else:
        raise ValueError(f"quantity {s!r} has an unknown suffix {suffix!r}")
    return -value if sign == "-" else value


def value(s: object) -> int:
    """Quantity.Value(): the integer value, rounded up (away from zero)."""
    v = parse_quantity(s)
    return math.ceil(v) if v >= 0 else -math.ceil(-v)


def bandwidth_bps(s: object) -> int:
    """A bandwidth annotation in bits per second, checked as the kubelet checks it (1k to 1P)."""
    bps = value(s)
    if bps < MIN_BANDWIDTH:
        raise ValueError(f"bandwidth {s!r} is unreasonably small (< 1kbit)")
    if bps > MAX_BANDWIDTH:
        raise ValueError(f"bandwidth {s!r} is unreasonably large (> 1Pbit)")
    return bps


def bandwidth_capability(annotations: object) -> dict[str, int] | None:
    """The `bandwidth` runtimeConfig containerd's CRI plugin builds from the pod's annotations (toCNIBandWidth):
    rates in bits per second, bursts math.MaxUint32; None when neither annotation is set."""
    if not isinstance(annotations, dict) and not hasattr(annotations, "get"):
        return None
    out: dict[str, int] = {}
    for ann, key in ((INGRESS_BANDWIDTH, "ingress"), (EGRESS_BANDWIDTH, "egress")):
        raw = annotations.get(ann)  # type: ignore[union-attr]
        if raw is not None:
            out[f"{key}Rate"] = bandwidth_bps(raw)
            out[f"{key}Burst"] = MAX_BURST
    return out or None
