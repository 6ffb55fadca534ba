"""The bandwidth plugin driven by pod annotations: emu passes kubernetes.io/egress-bandwidth and
kubernetes.io/ingress-bandwidth as runtimeConfig.bandwidth (as containerd does) and iperf3 measures the result.

containerd sends math.MaxUint32 bits (512 MiB) as the burst, so a fresh pod's token bucket first lets ~512 MiB
through at line rate; iperf3 omits the first seconds (-O) and the steady rate must be within 15% of the limit."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import TOPOLOGIES

TOPOLOGY = str(TOPOLOGIES / "cni-bandwidth.yaml")
TOLERANCE = 0.15
OMIT_S = 2  # long enough for the 512 MiB burst at veth speed
PORT = 5201


def _kernel_missing() -> str | None:
    """What the bandwidth plugin needs and the kernel lacks (tried in a throwaway namespace), or None."""
    ns = f"emu-bwprobe-{os.getpid()}"
    steps = [("tbf qdisc", "ip link add bwp0 type veth peer name bwp1 && ip link set bwp0 up && ip link set bwp1 up "
              "&& tc qdisc add dev bwp0 root tbf rate 10mbit burst 64kb latency 25ms"),
             ("ifb device", "ip link add bwifb type ifb && ip link set bwifb up"),
             ("ingress qdisc", "tc qdisc add dev bwp1 handle ffff: ingress"),
             ("mirred action", "tc filter add dev bwp1 parent ffff: protocol all u32 match u32 0 0 "
              "action mirred egress redirect dev bwifb")]
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        return "network namespaces (ip netns add failed)"
    try:
        for what, cmd in steps:
            if subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True).returncode != 0:
                return what
        return None
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/usr/lib/cni/bandwidth"):
        return "needs Debian's containernetworking-plugins (/usr/lib/cni/bandwidth)"
    if shutil.which("iperf3") is None:
        return "needs iperf3 (apt-get install iperf3)"
    missing = _kernel_missing()
    return f"kernel lacks the {missing} the bandwidth plugin needs" if missing else None


@pytest.fixture(scope="module")
def bw(emu_cluster):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with emu_cluster(TOPOLOGY) as c:
        yield c


def iperf(c, server: str, client: str) -> dict:
    """iperf3 from `client` to `server` (a one-shot server in the server pod, always killed)."""
    srv = subprocess.Popen(["ip", "netns", "exec", c.netns(server), "iperf3", "-s", "-1", "-p", str(PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while True:  # wait for the listener
            ss = c.exec(server, "ss", "-Htln", f"sport = :{PORT}", check=False).stdout
            if ss.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        r = c.exec(client, "iperf3", "-c", c.pod_ip(server), "-p", str(PORT), "-t", "3", "-O", str(OMIT_S), "-J",
                   check=False)
        out = json.loads(r.stdout)
        assert "error" not in out, out["error"]
        return out
    finally:
        srv.kill()
        srv.wait()


def _rate(out: dict) -> float:
    return out["end"]["sum_received"]["bits_per_second"]


def test_tc_is_set_up_from_the_annotations(bw):
    node2 = bw.exec("node/node-2", "tc", "qdisc", "show").stdout
    assert "rate 20Mbit" in node2 and "rate 10Mbit" in node2 and "ingress ffff:" in node2
    assert "tbf" not in bw.exec("node/node-1", "tc", "qdisc", "show").stdout  # no annotation, no shaping


def test_egress_bandwidth_annotation_is_enforced(bw):
    rate = _rate(iperf(bw, "default/server", "default/client"))
    print(f"egress 20M: measured {rate / 1e6:.2f} Mbit/s")
    assert abs(rate - 20e6) <= TOLERANCE * 20e6, f"{rate / 1e6:.2f} Mbit/s, limit 20 Mbit/s"


def test_ingress_bandwidth_annotation_is_enforced(bw):
    rate = _rate(iperf(bw, "default/slow-reader", "default/server"))
    print(f"ingress 10M: measured {rate / 1e6:.2f} Mbit/s")
    assert abs(rate - 10e6) <= TOLERANCE * 10e6, f"{rate / 1e6:.2f} Mbit/s, limit 10 Mbit/s"


def test_pods_without_annotations_are_not_shaped(bw):
    rate = _rate(iperf(bw, "default/client", "default/server"))  # server's egress, client's ingress: no limits
    print(f"unshaped: measured {rate / 1e6:.0f} Mbit/s")
    assert rate > 100e6
