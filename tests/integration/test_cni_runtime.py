"""emu as a CNI runtime: Debian's reference plugins (bridge, host-local, portmap, loopback) wire the pods from
inside the node namespaces, and test plugins written here prove any binary can be dropped in: prevResult
chaining, a failing ADD that leaves nothing behind, DEL exactly once per ADD (also after SIGKILL), `emu cni log`."""
from __future__ import annotations

import collections
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap

import pytest

from emu.cluster import lifecycle as clusters
from emu.cluster import converge
from emu.apply import netns
from emu.observe import probing
from emu.apply import state
from emu.network.cni import pods as cni_pods
from emu.network.cni import runtime as cni_runtime
from emu.network.cni.runtime import CNIError
from tests.conftest import TOPOLOGIES
from tests.waiting import wait_until

REFERENCE = str(TOPOLOGIES / "cni-flannel-reference.yaml")
VXLAN = str(TOPOLOGIES / "flannel-vxlan.yaml")

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"),
                                reason="needs Debian's containernetworking-plugins (/usr/lib/cni)")

# A plugin obeying the spec: it appends what it got (command, CNI_* environment, stdin) to the file named by its
# "record" key, returns its prevResult unchanged on ADD (or an empty result first in a list), fails ADD with an
# error JSON when "fail" is set, and sleeps "sleep" seconds on ADD.
RECORDER = textwrap.dedent('''\
    #!{python}
    import json, os, sys, time
    conf = json.load(sys.stdin)
    cmd = os.environ.get("CNI_COMMAND")
    with open(conf["record"], "a") as f:
        f.write(json.dumps({{"cmd": cmd, "env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}},
                            "stdin": conf}}) + "\\n")
    if cmd == "VERSION":
        print(json.dumps({{"cniVersion": conf.get("cniVersion", "1.0.0"),
                          "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}}))
    elif cmd == "ADD":
        time.sleep(conf.get("sleep", 0))
        if conf.get("fail"):
            print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 7, "msg": "recorder refuses this pod",
                              "details": "asked to fail"}}))
            sys.exit(1)
        print(json.dumps(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}}))
''')

CLUSTER = textwrap.dedent('''\
    apiVersion: emu.dev/v1alpha1
    kind: Cluster
    metadata: {{name: {name}}}
    spec:
      nodes: 2
      cni: {{plugin: cni, nodeConfig: flannel, conflist: net.conflist, binDir: [bin, /usr/lib/cni]}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: web}}
    spec:
      replicas: {replicas}
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web}}}}
        spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
''')


def conflist(record: str, **extra: object) -> dict:
    return {"cniVersion": "0.4.0", "name": "testnet", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "isDefaultGateway": True, "hairpinMode": True,
         "mtu": "${MTU}", "ipam": {"type": "host-local", "ranges": [[{"subnet": "${NODE_SUBNET}"}]],
                                   "routes": [{"dst": "${POD_CIDR}"}]}},
        {"type": "recorder", "record": record, **extra}]}


def unique(prefix: str) -> str:
    """A cluster name no other test (or concurrent run) uses, so the cluster a test takes down is its own."""
    return f"{prefix}-{secrets.token_hex(3)}"


def make_topology(tmp_path, name: str, replicas: int = 4, **extra: object) -> tuple[str, str]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    plugin = tmp_path / "bin" / "recorder"
    plugin.write_text(RECORDER.format(python=sys.executable))
    plugin.chmod(0o755)
    record = str(tmp_path / f"{name}.calls.jsonl")
    text = json.dumps(conflist(record, **extra)).replace('"${MTU}"', "${MTU}")
    (tmp_path / "net.conflist").write_text(text)
    topo = tmp_path / f"{name}.yaml"
    topo.write_text(CLUSTER.format(name=name, replicas=replicas))
    return str(topo), record


def calls(record: str) -> list[dict]:
    try:
        with open(record) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def mine(name: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(name + ".")]


def ipj(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="module")
def ref(emu_cluster):
    with emu_cluster(REFERENCE) as c:
        yield c


# --- the reference plugins: a real flannel cluster built by bridge + host-local + portmap ----------------------------


@pytest.mark.parametrize("proto", ["tcp", "udp"])
@pytest.mark.parametrize("dst", ["default/web-1", "shop/cart-6d557d6b4f-p78r2"], ids=["cross-node", "same-node"])
def test_reference_pod_to_pod(ref, proto, dst):
    r = ref.probe("default/web-0", dst, proto=proto, port=80)
    assert r["ok"] and r["answered_by"] == dst, r
    assert r["client_ip_seen"] == ref.pod_ip("default/web-0")


def test_reference_mtu_edge_and_matrix(ref):
    assert ref.probe("default/web-0", "default/web-1", proto="icmp", size=1422, df=True)["ok"]
    big = ref.probe("default/web-0", "default/web-1", proto="icmp", size=1423, df=True)
    assert big["verdict"] == "frag-needed" and big["icmp"]["mtu"] == 1450
    assert ref.matrix("tcp", 80)["failures"] == 0


def test_reference_service_reaches_the_plugin_made_addresses(ref):
    seen = {ref.probe("shop/cart-6d557d6b4f-p78r2", "svc/default/web:http")["answered_by"] for _ in range(30)}
    assert seen == {"default/web-0", "default/web-1", "default/web-2"}


def test_reference_network_policy_is_enforced(ref, tmp_path):
    deny = tmp_path / "deny.yaml"
    deny.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n"
                    "spec: {podSelector: {}, policyTypes: [Ingress]}\n")
    ref.apply(str(deny))
    try:
        # kube-router's per-pod chain REJECTs what no policy allows; the pod itself still answers (the control)
        ref.assert_blocked("default/web-0", "shop/cart-6d557d6b4f-jklng", port=80, by="reject")
        assert ref.probe("shop/cart-6d557d6b4f-jklng", "default/web-0", port=80)["ok"]
    finally:
        ref.delete(str(deny))
    assert ref.probe("default/web-0", "shop/cart-6d557d6b4f-jklng", port=80)["ok"]


def _pod_view(ns: str) -> dict:
    (eth0,) = ipj("-n", ns, "addr", "show", "eth0")
    (lo,) = ipj("-n", ns, "addr", "show", "lo")
    routes = sorted((r["dst"], r.get("gateway"), r.get("scope", "")) for r in ipj("-n", ns, "route"))
    arp_notify = netns.run_in(ns, lambda: open("/proc/sys/net/ipv4/conf/eth0/arp_notify").read().strip())
    return {"mtu": eth0["mtu"], "up": eth0["operstate"], "lo": "UP" in lo["flags"], "arp_notify": arp_notify,
            "inet": [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"],
            "routes": routes}


def _node_view(ns: str) -> dict:
    (cni0,) = ipj("-n", ns, "addr", "show", "cni0")
    veths = [v for v in ipj("-n", ns, "-d", "link", "show", "type", "veth") if v["ifname"] != "eth0"]
    return {"cni0": (cni0["mtu"], [(a["local"], a["prefixlen"]) for a in cni0["addr_info"] if a["family"] == "inet"]),
            "veths": sorted((v["mtu"], v["master"], v["linkinfo"]["info_slave_data"]["hairpin"],
                             v["ifname"].startswith("veth") and len(v["ifname"]) == 12) for v in veths),
            "routes": sorted((r["dst"], r.get("gateway"), r.get("dev")) for r in ipj("-n", ns, "route")
                             if r.get("dev") != "cni0")}


def test_builtin_and_real_plugins_program_the_same_pods_and_nodes(ref, vxlan):
    """The built-in flannel cluster and the real-plugin one of the same topology: equal pod interfaces,
    addresses and routes, equal cni0 and host veths (their names are random in both, so only their shape)."""
    for pod in ref.model.pods:
        assert _pod_view(ref.netns(pod.key)) == _pod_view(vxlan.netns(pod.key)), pod.key
        assert ref.pod_ip(pod.key) == vxlan.pod_ip(pod.key)
    for node in ref.model.cluster.nodes:
        assert _node_view(ref.netns(f"node/{node}")) == _node_view(vxlan.netns(f"node/{node}")), node


def test_reference_calls_are_logged_with_k8s_args_inside_the_node(ref):
    rec = state.load(ref.name)
    log = [e for e in cni_runtime.read_log(cni_pods.log_path(rec.dir), "default/web-1")]
    assert [(e["command"], e["plugin"]) for e in log] == [("ADD", "loopback"), ("ADD", "bridge"), ("ADD", "portmap")]
    bridge = log[1]
    env = bridge["env"]
    assert env["CNI_NETNS"] == netns.path(ref.netns("default/web-1")) and env["CNI_IFNAME"] == "eth0"
    assert "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=" in env["CNI_ARGS"]
    assert bridge["node_netns"] == ref.netns("node/node-2")
    assert bridge["stdin"]["ipam"]["dataDir"] == os.path.join(rec.dir, "cni/nodes/node-2/ipam")
    assert log[2]["stdin"]["prevResult"] == json.loads(bridge["stdout"])  # chained through the list
    out = subprocess.run([sys.executable, "-m", "emu", "cni", "log", "default/web-1", "-o", "wide",
                          "--cluster", ref.name], capture_output=True, text=True)
    assert out.returncode == 0 and "replay: echo" in out.stdout and "CNI_COMMAND=ADD" in out.stdout


# --- any plugin binary: a test plugin chained after bridge -----------------------------------------------------------


def test_chain_prev_result_del_once_and_live_changes(tmp_path):
    name = unique("cnichain")
    topo, record = make_topology(tmp_path, name, replicas=3)
    try:
        cl = clusters.up(topo)
        adds = [c for c in calls(record) if c["cmd"] == "ADD"]
        assert len(adds) == 3
        log = cni_runtime.read_log(cni_pods.log_path(cl.record.dir))
        for a in adds:
            bridge = next(e for e in log if e["plugin"] == "bridge" and e["command"] == "ADD"
                          and e["env"]["CNI_CONTAINERID"] == a["env"]["CNI_CONTAINERID"])
            assert a["stdin"]["prevResult"] == json.loads(bridge["stdout"])
            assert a["stdin"]["name"] == "testnet" and a["stdin"]["cniVersion"] == "0.4.0"
            ip = a["stdin"]["prevResult"]["ips"][0]["address"].split("/")[0]
            key = "default/" + a["env"]["CNI_ARGS"].split("K8S_POD_NAME=")[1].split(";")[0]
            assert cl.plan.pod(key).ip.compressed == ip  # the model took the plugin's address
        # live: scale down by one (DEL for that pod only), then back up
        scaled = tmp_path / "scale.yaml"
        text = open(topo).read().split("---\n", 1)[1]
        scaled.write_text(text.replace("replicas: 3", "replicas: 2"))
        ch = converge.apply_file(cl.name, str(scaled))
        assert len(ch.removed) == 1
        dels = [c for c in calls(record) if c["cmd"] == "DEL"]
        assert len(dels) == 1 and dels[0]["stdin"]["prevResult"]["ips"]  # 0.4.0: DEL gets the cached result
    finally:
        clusters.down(name)
    per = collections.Counter((c["env"]["CNI_CONTAINERID"], c["cmd"]) for c in calls(record))
    ids = {cid for cid, _ in per}
    assert all(per[(cid, "ADD")] == 1 and per[(cid, "DEL")] == 1 for cid in ids), per
    assert mine(name) == [] and not os.path.exists(state.cluster_dir(name))


def test_a_failing_plugin_leaves_nothing_behind_and_its_error_is_shown(tmp_path):
    name = unique("cnifail")
    topo, record = make_topology(tmp_path, name, replicas=2, fail=True)
    try:
        with pytest.raises(CNIError, match="recorder refuses this pod") as e:
            clusters.up(topo)
        assert e.value.error["code"] == 7
        assert mine(name) == [] and not os.path.exists(state.cluster_dir(name))
        per = collections.Counter((c["env"]["CNI_CONTAINERID"], c["cmd"]) for c in calls(record))
        assert per and all(per[(cid, "DEL")] == 1 for cid, cmd in per if cmd == "ADD")
        r = subprocess.run([sys.executable, "-m", "emu", "up", topo], capture_output=True, text=True)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        (line,) = r.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: CNI plugin recorder failed ADD of network 'testnet' for pod default/web-")
        assert '"msg": "recorder refuses this pod"' in line and '"details": "asked to fail"' in line
        assert mine(name) == [] and not os.path.exists(state.cluster_dir(name))
    finally:
        clusters.down(name)  # only if an up wrongly succeeded or left a record; a no-op otherwise


def test_sigkill_during_up_then_down_calls_del_once_per_add(tmp_path):
    name = unique("cnikill")
    topo, record = make_topology(tmp_path, name, replicas=6, sleep=0.3)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "emu", "up", topo], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: len([c for c in calls(record) if c["cmd"] == "ADD"]) >= 3, interval=0.01,
                       max_interval=0.01, what="up to run the recorder's ADD for three pods")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        adds = {c["env"]["CNI_CONTAINERID"] for c in calls(record) if c["cmd"] == "ADD"}
        assert 3 <= len(adds) < 6
        r = subprocess.run([sys.executable, "-m", "emu", "down", name], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        subprocess.run([sys.executable, "-m", "emu", "down", name], capture_output=True, text=True)  # idempotent
        per = collections.Counter((c["env"]["CNI_CONTAINERID"], c["cmd"]) for c in calls(record))
        assert all(per[(cid, "DEL")] == 1 for cid in adds), per
        assert mine(name) == [] and not os.path.exists(state.cluster_dir(name))
    finally:
        clusters.down(name)  # a no-op once the test's own `emu down` ran


def test_ptp_cluster_with_host_port_through_portmap(emu_cluster, tmp_path):
    """topologies/cni-ptp.yaml (ptp + host-local, host-gw routes) plus a pod with a hostPort: external reaches it
    at its node's address through the portmap plugin's DNAT."""
    extra = tmp_path / "hostport.yaml"
    extra.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: hp, labels: {app: hp}}\n"
                     "spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 8080, hostPort: 30080}]}]}\n")
    with emu_cluster(str(TOPOLOGIES / "cni-ptp.yaml")) as c:
        assert c.matrix("tcp", 80)["failures"] == 0
        assert c.probe("default/web-0", "svc/default/web:http")["ok"]
        (eth0,) = ipj("-n", c.netns("default/web-1"), "addr", "show", "eth0")
        assert eth0["mtu"] == 1500
        c.apply(str(extra))
        node_ip = str(c.plan.nodes[1].ip)
        r = c.probe("external", f"{node_ip}:30080")
        assert r["ok"] and r["answered_by"] == "default/hp", r
        c.delete(str(extra))
        # portmap's DEL removed its DNAT: the SYN now reaches node-2's own stack, where nothing listens on 30080,
        # and the node answers with a TCP RST.  (assert_blocked needs a control that reaches the same address and
        # port, which no longer exists; the RST is itself proof that the node answered.)
        r = c.probe("external", f"{node_ip}:30080")
        assert probing.denial(r) == "reset", r
