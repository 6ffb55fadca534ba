"""`spec.cni` with `plugin: flannel` (the default): the backend flanneld runs, as kube-flannel.yml's net-conf.json
names it (`"Backend": {"Type": "vxlan"}`).

    cni:
      plugin: flannel
      backend: vxlan                 # vxlan (flannel.1, the default) | host-gw (routes to the peers' node IPs)

Differences: flannel's other backends (wireguard, ipip, ipsec, udp, the cloud ones) and its backend options (VNI, Port,
DirectRouting) are not modelled; a cluster gets VNI 1 and port 8472, flannel's defaults.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.model.types import Backend, ClusterSpec, CNISpec, NetworkSpec

if TYPE_CHECKING:
    from emu.model.documents import Collector, Document

LAYER = "model"


@dataclass(frozen=True, slots=True)
class FlannelSpec(CNISpec):
    plugin: str = "flannel"
    backend: Backend = Backend.VXLAN


def parse_backend(v: Mapping[str, Any], doc: Document, c: Collector, obj: str) -> Backend:
    """`spec.cni.backend`, vxlan unless given (also under plugin cni's nodeConfig flannel)."""
    backend = v.get("backend", "vxlan")
    try:
        return Backend(backend)
    except ValueError:
        c.add(doc, doc.file, obj, "spec.cni.backend", f"backend {backend!r} is not one of vxlan, host-gw")
        return Backend.VXLAN


def parse(v: Mapping[str, Any], doc: Document, c: Collector, obj: str) -> FlannelSpec:
    return FlannelSpec(backend=parse_backend(v, doc, c, obj))


def settings(c: ClusterSpec) -> FlannelSpec:
    """The cluster's flannel settings: its spec.cni under plugin flannel, and under plugin cni too, whose nodes emu
    prepares as flanneld would (emu.network.cni.spec.CniSpec extends FlannelSpec)."""
    if not isinstance(c.cni, FlannelSpec):
        raise TypeError(f"cluster {c.name}: spec.cni.plugin {c.cni.plugin!r} has no flannel backend")
    return c.cni


SPEC = NetworkSpec("flannel", ("backend",), parse)
