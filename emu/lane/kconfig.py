"""A kernel's build config (boot/config-VERSION), and which of emu's dataplane features a kernel built with it
has."""
from __future__ import annotations

import re
from collections.abc import Mapping

# emu.apply.kernel.features() name -> the kernel config option that provides it (=y or =m means the kernel has it).
FEATURE_CONFIG = {
    "vxlan": "CONFIG_VXLAN",
    "bridge": "CONFIG_BRIDGE",
    "macvlan": "CONFIG_MACVLAN",
    "dummy": "CONFIG_DUMMY",
    "ipip": "CONFIG_NET_IPIP",
    "gre": "CONFIG_NET_IPGRE",
    "vlan": "CONFIG_VLAN_8021Q",
    "vrf": "CONFIG_NET_VRF",
    "wireguard": "CONFIG_WIREGUARD",
    "ifb": "CONFIG_IFB",
    "ip_vs": "CONFIG_IP_VS",
    "sctp": "CONFIG_IP_SCTP",
    "netem": "CONFIG_NET_SCH_NETEM",
    "nftables": "CONFIG_NF_TABLES",
    "br_netfilter": "CONFIG_BRIDGE_NETFILTER",
}


def parse_config(text: str) -> dict[str, str]:
    """A kernel .config as {option: value}; `# CONFIG_X is not set` becomes "n", quotes are removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip('"')
            continue
        m = re.match(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$", line)
        if m:
            out[m.group(1)] = "n"
    return out


def config_features(config: Mapping[str, str]) -> dict[str, bool]:
    """Which emu.apply.kernel feature names a kernel with this config has (option =y or =m)."""
    return {name: config.get(opt, "n") in ("y", "m") for name, opt in FEATURE_CONFIG.items()}
