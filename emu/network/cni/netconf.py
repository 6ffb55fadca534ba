"""A CNI network configuration list as data (libcni's NetworkConfigList, pkg/libcni/conf.go): parsed and checked
without running anything, so the topology schema (emu.network.cni.spec) can validate a conflist in the model layer.

A single .conf becomes a one-plugin list (libcni's ConfListFromConf); the list's name and each plugin's type must be
what libcni accepts (pkg/utils ValidateNetworkName), since both end up in file names.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

LAYER = "model"

DEFAULT_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")

# libcni (pkg/utils ValidateNetworkName, cniReg): `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`; \Z: no trailing newline either
NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")


@dataclass(frozen=True)
class NetConfList:
    """A network configuration list (a single .conf becomes a one-plugin list, as libcni's ConfListFromConf)."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetConfList":
        if not isinstance(d, dict):
            raise ValueError("a network configuration must be a JSON object")
        if "plugins" not in d:  # a single network configuration (.conf)
            if "type" not in d:
                raise ValueError("a .conf needs a \"type\" (or use a .conflist with \"plugins\")")
            d = {"cniVersion": d.get("cniVersion", "0.3.1"), "name": d.get("name"),
                 "plugins": [{k: v for k, v in d.items() if k not in ("name", "cniVersion")}]}
        name, plugins = d.get("name"), d.get("plugins")
        if not isinstance(name, str) or not name:
            raise ValueError("\"name\" is missing")
        if not NETWORK_NAME.match(name):  # it names files: the result cache <net>-<id>-<ifname>, host-local's dir
            raise ValueError(f"\"name\" {name!r} must be letters, digits, '_', '.' and '-', starting with a letter "
                             f"or digit (libcni's ValidateNetworkName)")
        if not isinstance(plugins, list) or not plugins:
            raise ValueError("\"plugins\" must be a non-empty list")
        for i, p in enumerate(plugins):
            if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
                raise ValueError(f"plugins[{i}] needs a \"type\"")
            if not NETWORK_NAME.match(p["type"]):  # a file name looked up in CNI_PATH: no '/', no '..'
                raise ValueError(f"plugins[{i}].type {p['type']!r} is not a plugin file name")
            caps = p.get("capabilities", {})  # libcni's types.NetConf decodes it into a map[string]bool
            if not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values()):
                raise ValueError(f"plugins[{i}].capabilities must be an object of booleans (libcni's "
                                 f"map[string]bool), got {caps!r}")
        return cls(name, str(d.get("cniVersion", "0.3.1")), tuple(plugins), bool(d.get("disableCheck", False)), d)

    def to_dict(self) -> dict[str, Any]:
        return {"cniVersion": self.cni_version, "name": self.name, "plugins": list(self.plugins),
                **({"disableCheck": True} if self.disable_check else {})}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()
