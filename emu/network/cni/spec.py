"""`spec.cni` with `plugin: cni`: the topology schema of real-plugin clusters.

    cni:
      plugin: cni
      conflist: cni/ptp.conflist     # a .conflist or .conf, relative to the topology file; optional with
                                     # nodeConfig flannel (then flannel's delegate: bridge + host-local + portmap)
      binDir: [/usr/lib/cni]         # where plugin binaries are looked up (CNI_PATH); default: /usr/lib/cni and
                                     # /opt/cni/bin
      nodeConfig: flannel            # flannel: emu plays flanneld (backend vxlan | host-gw); none: eth0 only
      backend: vxlan
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.model.types import ClusterSpec, NetworkSpec
from emu.network.cni import config
from emu.network.cni.netconf import DEFAULT_BIN_DIRS
from emu.network.flannel.spec import FlannelSpec, parse_backend

if TYPE_CHECKING:
    from emu.model.documents import Collector, Document

LAYER = "model"

FIELDS = ("conflist", "binDir", "nodeConfig", "backend")  # besides plugin; emu.model.schema reports any other
NODE_CONFIGS = ("flannel", "none")


@dataclass(frozen=True, slots=True)
class CniSpec(FlannelSpec):
    """flannel's settings (the backend, for nodeConfig flannel) and the plugins' own."""

    plugin: str = "cni"
    conflist: str | None = None  # absolute path of the .conflist/.conf (None: flannel's delegate)
    bin_dir: tuple[str, ...] = ()  # CNI_PATH
    node_config: str = "flannel"  # flannel (emu plays flanneld) | none


def parse(v: Mapping[str, Any], doc: Document, c: Collector, obj: str) -> CniSpec:
    f = doc.file
    node_config = v.get("nodeConfig", "flannel")
    if node_config not in NODE_CONFIGS:
        c.add(doc, f, obj, "spec.cni.nodeConfig", f"{node_config!r} is not one of {', '.join(NODE_CONFIGS)}")
        node_config = "flannel"
    b = parse_backend(v, doc, c, obj)
    bins = v.get("binDir", list(DEFAULT_BIN_DIRS))
    if isinstance(bins, str):
        bins = [bins]
    if not isinstance(bins, list) or not bins or not all(isinstance(x, str) and x for x in bins):
        c.add(doc, f, obj, "spec.cni.binDir", f"must be a directory or a list of directories, got {bins!r}")
        bins = list(DEFAULT_BIN_DIRS)
    bins = [config.resolve(f, x) for x in bins]
    conflist = v.get("conflist")
    if conflist is None:
        if node_config != "flannel":
            c.add(doc, f, obj, "spec.cni.conflist",
                  "a conflist is required unless nodeConfig is flannel (which writes flannel's delegate)")
    elif not isinstance(conflist, str) or not conflist:
        c.add(doc, f, obj, "spec.cni.conflist", f"must be a file path, got {conflist!r}")
        conflist = None
    else:
        conflist = config.resolve(f, conflist)
        problem = config.check_file(conflist)
        if problem:
            c.add(doc, f, obj, "spec.cni.conflist", problem)
    return CniSpec("cni", b, conflist, tuple(bins), node_config)


def settings(c: ClusterSpec) -> CniSpec:
    """The cluster's spec.cni, which plugin cni gave it."""
    if not isinstance(c.cni, CniSpec):
        raise TypeError(f"cluster {c.name}: spec.cni.plugin {c.cni.plugin!r} is not cni")
    return c.cni


SPEC = NetworkSpec("cni", FIELDS, parse)
