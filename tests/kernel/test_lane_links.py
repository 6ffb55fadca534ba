"""VLAN, VRF and WireGuard links (this host has none of them; the kernel lane's Debian kernel has 8021q, vrf and
wireguard as modules): each test makes the link between network namespaces it creates (and always removes), passes
a packet over it, and checks what makes the link kind what it is.

Addresses are from the documentation ranges (RFC 5737) and exist only inside the test namespaces.
"""
from __future__ import annotations

import base64
import re
import secrets

import pytest
from pyroute2 import WireGuard

from emu.apply import netns

from .conftest import in_ns, ip, link_json, veth

pytestmark = pytest.mark.integration

A, B = "198.51.100.1", "198.51.100.2"


def ping_loss(ns: str, addr: str, *opts: str, count: int = 3, wait: int = 5) -> float:
    """Percent of COUNT pings from NS to ADDR lost (each waits up to WAIT seconds for its reply)."""
    r = in_ns(ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(wait), *opts, addr, check=False)
    m = re.search(r"([\d.]+)% packet loss", r.stdout)
    return float(m.group(1)) if m else 100.0


def bare_veth(a: str, b: str) -> None:
    """va in A and vb in B, up, without addresses (the VLAN sub-interfaces carry them)."""
    ip(a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
    ip(a, "link", "set", "va", "up")
    ip(b, "link", "set", "vb", "up")


def vlan(ns: str, parent: str, vid: int, cidr: str) -> str:
    dev = f"{parent}.{vid}"
    ip(ns, "link", "add", "link", parent, "name", dev, "type", "vlan", "id", str(vid))
    ip(ns, "addr", "add", cidr, "dev", dev)
    ip(ns, "link", "set", dev, "up")
    return dev


@pytest.mark.kernel("vlan")
def test_vlan_sub_interfaces_pass_a_ping_and_frames_of_another_id_do_not_meet(namespaces):
    a, b = namespaces("a", "b")
    bare_veth(a, b)
    vlan(a, "va", 10, f"{A}/24")
    vlan(b, "vb", 10, f"{B}/24")
    assert ping_loss(a, B) == 0
    link = link_json(a, "va.10")
    assert link["linkinfo"]["info_kind"] == "vlan" and link["linkinfo"]["info_data"]["id"] == 10
    assert link["stats64"]["rx"]["packets"] >= 3  # the replies came back tagged 10 to the sub-interface
    # The 802.1Q tag is on the wire: B now listens on VLAN 20 only, and A's VLAN 10 frames no longer reach it.
    ip(b, "link", "del", "vb.10")
    vlan(b, "vb", 20, f"{B}/24")
    assert ping_loss(a, B, count=1, wait=1) == 100


@pytest.mark.kernel("vrf")
def test_vrf_moves_the_connected_route_into_its_table_and_a_ping_bound_to_it_passes(namespaces):
    a, b = namespaces("a", "b")
    veth(a, "va", f"{A}/24", b, "vb", f"{B}/24")
    assert ping_loss(a, B, count=1) == 0  # before: the main table has the connected route
    ip(a, "link", "add", "blue", "type", "vrf", "table", "10")
    ip(a, "link", "set", "blue", "up")
    ip(a, "link", "set", "va", "master", "blue")
    # Enslaving moves the device's routes to the VRF's table (drivers/net/vrf.c, Documentation/networking/vrf.rst)
    assert "198.51.100.0/24 dev va" in ip(a, "route", "show", "table", "10").stdout
    assert "198.51.100.0/24" not in ip(a, "route", "show", "table", "main").stdout
    assert ip(a, "route", "get", B, check=False).returncode != 0  # unbound: no route in the main table
    assert ping_loss(a, B, "-I", "blue") == 0  # bound to the VRF device: its table is used
    assert link_json(a, "va")["master"] == "blue"


def _wg_set(ns: str, private_key: bytes | None = None, **peer: object) -> bytes:
    """Configure wg0 in NS (a private key, and/or one peer) over generic netlink; returns wg0's public key, which
    the kernel derives from the private one (Curve25519)."""
    def go() -> bytes:
        with WireGuard() as wg:
            if private_key is not None:
                wg.set("wg0", private_key=private_key, listen_port=51820)
            if peer:
                wg.set("wg0", peer=peer)
            return wg.info("wg0")[0].get("WGDEVICE_A_PUBLIC_KEY")

    return netns.run_in(ns, go)


@pytest.mark.kernel("wireguard")
def test_wireguard_tunnel_passes_a_ping_after_a_handshake(namespaces):
    a, b = namespaces("a", "b")
    veth(a, "va", f"{A}/24", b, "vb", f"{B}/24")
    inner = {a: "192.0.2.1", b: "192.0.2.2"}
    pub = {}
    for ns in (a, b):
        ip(ns, "link", "add", "wg0", "type", "wireguard")
        pub[ns] = _wg_set(ns, private_key=base64.b64encode(secrets.token_bytes(32)))
        ip(ns, "addr", "add", f"{inner[ns]}/24", "dev", "wg0")
        ip(ns, "link", "set", "wg0", "up")
    for ns, other, endpoint in ((a, b, B), (b, a, A)):
        _wg_set(ns, public_key=pub[other], endpoint_addr=endpoint, endpoint_port=51820,
                allowed_ips=[f"{inner[other]}/32"])
    assert ping_loss(a, inner[b]) == 0
    wg0 = link_json(a, "wg0")
    assert wg0["linkinfo"]["info_kind"] == "wireguard" and wg0["stats64"]["rx"]["packets"] >= 3
    # the underlay carried more than the tunnel sent: the handshake, and each ping wrapped in UDP and WireGuard's
    # header
    assert link_json(b, "vb")["stats64"]["rx"]["bytes"] > wg0["stats64"]["tx"]["bytes"]
