"""The bandwidth plugin driven by pod annotations: emu passes kubernetes.io/egress-bandwidth and
kubernetes.io/ingress-bandwidth as runtimeConfig.bandwidth (as containerd does) and iperf3 measures the result.

containerd sends math.MaxUint32 bits (512 MiB) as the burst, so a fresh pod's token bucket first lets ~512 MiB
through at line rate; iperf3 omits the seconds that takes at this machine's line rate (-O: under a second on a
host's veths, ~20 s under the kernel lane's emulated CPU) and the steady rate must be within 15% of the limit.

Ingress shaping needs the ifb link kind (the `kernel("ifb")` marker: without it the tests skip here and the kernel
lane runs them); the tbf and ingress qdiscs and the mirred action are tried as well, and a kernel that has ifb but
not those fails, naming what it lacks."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import pytest

from tests.conftest import TOPOLOGIES
from tests.waiting import wait_until

TOPOLOGY = str(TOPOLOGIES / "cni-bandwidth.yaml")
TOLERANCE = 0.15
OMIT_S = 2  # at least; long enough for the 512 MiB burst at a host's veth speed
BURST_BITS = 2**32 - 1  # containerd's burst: math.MaxUint32 bits
PORT = 5201

pytestmark = pytest.mark.kernel("ifb")


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
    """Why the tests cannot run here (tools/setup installs both: under CI these skips fail), or None."""
    if not os.path.exists("/usr/lib/cni/bandwidth"):
        return "needs Debian's containernetworking-plugins (/usr/lib/cni/bandwidth)"
    if shutil.which("iperf3") is None:
        return "needs iperf3 (apt-get install iperf3)"
    return None


@pytest.fixture(scope="module")
def bw(emu_cluster):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    missing = _kernel_missing()
    if missing:
        pytest.fail(f"this kernel has ifb but lacks the {missing} the bandwidth plugin needs", pytrace=False)
    with emu_cluster(TOPOLOGY) as c:
        yield c


@pytest.fixture(scope="module")
def omit_s(bw) -> int:
    """Seconds iperf3 omits: the time to spend the burst at the line rate of an unshaped pair (x1.5), at least
    OMIT_S (the bucket drains at line rate minus the limit)."""
    line = _rate(iperf(bw, "default/client", "default/server", seconds=1, omit=0))
    return max(OMIT_S, math.ceil(1.5 * BURST_BITS / line))


def iperf(c, server: str, client: str, seconds: int = 3, omit: int = OMIT_S) -> dict:
    """iperf3 from `client` to `server` (a one-shot server in the server pod, always killed)."""
    srv = subprocess.Popen(["ip", "netns", "exec", c.netns(server), "iperf3", "-s", "-1", "-p", str(PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: c.exec(server, "ss", "-Htln", f"sport = :{PORT}", check=False).stdout.strip(),
                   what=f"iperf3 to listen on {PORT}")
        r = c.exec(client, "iperf3", "-c", c.pod_ip(server), "-p", str(PORT), "-t", str(seconds), "-O", str(omit),
                   "-J", check=False)
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


def test_egress_bandwidth_annotation_is_enforced(bw, omit_s):
    rate = _rate(iperf(bw, "default/server", "default/client", omit=omit_s))
    print(f"egress 20M: measured {rate / 1e6:.2f} Mbit/s")
    assert abs(rate - 20e6) <= TOLERANCE * 20e6, f"{rate / 1e6:.2f} Mbit/s, limit 20 Mbit/s"


def test_ingress_bandwidth_annotation_is_enforced(bw, omit_s):
    rate = _rate(iperf(bw, "default/slow-reader", "default/server", omit=omit_s))
    print(f"ingress 10M: measured {rate / 1e6:.2f} Mbit/s")
    assert abs(rate - 10e6) <= TOLERANCE * 10e6, f"{rate / 1e6:.2f} Mbit/s, limit 10 Mbit/s"


def test_pods_without_annotations_are_not_shaped(bw):
    rate = _rate(iperf(bw, "default/client", "default/server"))  # server's egress, client's ingress: no limits
    print(f"unshaped: measured {rate / 1e6:.0f} Mbit/s")
    assert rate > 100e6
