"""Network configuration lists for `cni: {plugin: cni}` clusters: loading a .conflist/.conf, filling in the
per-node values emu knows, and the delegate configuration flannel's CNI plugin writes.

Templates: `${NAME}` anywhere in the file, with NAME one of TEMPLATE_KEYS (an unknown name is an error, `$$` is a
literal `$`).  After templating, every `host-local` IPAM without a `dataDir` gets the node's own directory under the
cluster's state directory, so emulated nodes never share (or touch the machine's) /var/lib/cni/networks; `tuning`
without a `dataDir` likewise keeps the backups it restores on DEL in the node's directory, not /run/cni/tuning.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
from typing import Any

from emu.model import yamlsafe
from emu.errors import ValidationError
from emu.network.cni.netconf import NetConfList

LAYER = "model"

MAX_CONFLIST_BYTES = 1024 * 1024  # a CNI network configuration is a few hundred bytes

TEMPLATE_KEYS = {
    "NODE_NAME": "the node's name (node-1)",
    "NODE_IP": "the node's underlay address",
    "NODE_SUBNET": "the node's pod subnet (10.244.0.0/24)",
    "NODE_GATEWAY": "the subnet's first address (10.244.0.1)",
    "POD_CIDR": "the cluster's podCIDR",
    "SERVICE_CIDR": "the cluster's serviceCIDR",
    "MTU": "the pod MTU (flannel's FLANNEL_MTU with nodeConfig flannel, else the underlay MTU)",
    "DATA_DIR": "a per-node directory for host-local (under the cluster's state directory)",
    "STATE_DIR": "a per-node scratch directory for the plugin",
    "CLUSTER": "the cluster's name",
}
_TEMPLATE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")
FLANNEL_DELEGATE_NAME = "cbr0"


def render(text: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        key = m.group(2)
        if key not in values:
            raise ValueError(f"unknown template ${{{key}}} (known: {', '.join(sorted(TEMPLATE_KEYS))})")
        return values[key]
    return _TEMPLATE.sub(sub, text)


def sample_values() -> dict[str, str]:
    """Values of the right shape, to validate a file before any node exists."""
    return {"NODE_NAME": "node-1", "NODE_IP": "172.18.0.2", "NODE_SUBNET": "10.244.0.0/24",
            "NODE_GATEWAY": "10.244.0.1", "POD_CIDR": "10.244.0.0/16", "SERVICE_CIDR": "10.96.0.0/12", "MTU": "1450",
            "DATA_DIR": "/run/emu/x/cni/node-1/ipam", "STATE_DIR": "/run/emu/x/cni/node-1", "CLUSTER": "x"}


def node_local(plugin: dict[str, Any], data_dir: str | None, state_dir: str | None) -> dict[str, Any]:
    """A copy of one plugin's config whose files stay in the node's directories: host-local IPAM without
    `dataDir` gets `data_dir`; tuning without `dataDir` gets `<state_dir>/tuning` (its default, /run/cni/tuning,
    would be the machine's and shared by every emulated node)."""
    p = copy.deepcopy(plugin)
    ipam = p.get("ipam")
    if data_dir and isinstance(ipam, dict) and ipam.get("type") == "host-local" and not ipam.get("dataDir"):
        ipam["dataDir"] = data_dir
    if state_dir and p.get("type") == "tuning" and not p.get("dataDir"):
        p["dataDir"] = os.path.join(state_dir, "tuning")
    return p


def load_text(text: str, values: dict[str, str], data_dir: str | None = None,
              state_dir: str | None = None) -> NetConfList:
    d = json.loads(render(text, values))
    net = NetConfList.from_dict(d)
    if data_dir is None and state_dir is None:
        return net
    plugins = tuple(node_local(p, data_dir, state_dir) for p in net.plugins)
    return NetConfList(net.name, net.cni_version, plugins, net.disable_check, net.raw)


def check_file(path: str) -> str | None:
    """A problem with a conflist file, or None: readable, templates known, valid JSON, a list with types."""
    try:
        text = yamlsafe.read_text(path, MAX_CONFLIST_BYTES)  # a FIFO or /dev/zero must not hang validation
    except ValidationError as e:
        return e.problems[0].message.replace("cannot read:", f"cannot read {path}:", 1)
    try:
        load_text(text, sample_values())
    except json.JSONDecodeError as e:
        return f"{path} is not valid JSON after templating: {e}"
    except ValueError as e:
        return f"{path}: {e}"
    return None


def flannel_delegate(subnet: ipaddress.IPv4Network, pod_cidr: ipaddress.IPv4Network, mtu: int,
                     data_dir: str) -> NetConfList:
    """What flannel's CNI plugin (flannel-io/cni-plugin, flannel_linux.go) delegates to, from subnet.env: bridge
    cni0 with host-local on the node's subnet and a route to the whole network, then portmap."""
    d = {"cniVersion": "0.3.1", "name": FLANNEL_DELEGATE_NAME, "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True, "hairpinMode": True,
         "mtu": mtu, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": str(subnet)}]], "routes": [{"dst": str(pod_cidr)}],
                  "dataDir": data_dir}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}
    return NetConfList.from_dict(d)


LOOPBACK = {"cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}


def resolve(base_file: str, path: str) -> str:
    """A path in a topology file is relative to the file."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base_file)),
                                                                          path))
