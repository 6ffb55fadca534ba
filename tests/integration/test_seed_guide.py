"""The seed guide (k8s-networking-guide.md) on the real dataplane: topologies/seed-guide.yaml carries every manifest
of the guide, and each test says what one of them does here.  The last test applies every manifest block of the
guide itself, verbatim, with `emu apply -f` and checks what it changed."""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from emu.cluster import lifecycle as clusters
from emu.addons.dns import probe as dns
from emu.addons.ingress import httpprobe
from emu.addons.kubeproxy import inputs
from emu.testing import NETWORK_POLICY_DENIAL as POLICY
from tests.conftest import TOPOLOGIES
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO.parent / "shared" / "seeds" / "k8s-networking-guide.md"  # shared/ lies beside the checkout
SEED_GUIDE = REPO / "topologies" / "seed-guide.yaml"


@pytest.fixture(scope="module")
def sg(emu_cluster):
    with emu_cluster(str(SEED_GUIDE)) as c:
        yield c


def cl(c):
    return clusters.open_cluster(c.name)


def ok(c, src, dst, port=None, **kw):
    return c.probe(src, dst, port=port, timeout=kw.pop("timeout", 0.5), **kw)["ok"]


def blocked(c, src, dst, port=None, **kw) -> bool:
    """SRC -> DST meets a NetworkPolicy's REJECT, while DST answers a positive control (itself, or control=)."""
    c.assert_blocked(src, dst, port=port, by=POLICY, **kw)
    return True


# --- 2.1 网段规划 -----------------------------------------------------------------------------------------------------


def test_cluster_cidrs_follow_the_controller_manager_flags(sg):
    c = cl(sg)
    pods, svcs = ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("10.96.0.0/12")
    assert [str(n.subnet) for n in c.plan.nodes] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert all(p.ip in pods for p in c.plan.pods if not p.host_network)
    assert all(a.cluster_ip in svcs for a in c.allocations.services.values() if a.cluster_ip)
    assert sg.cluster_ip("kube-system/kube-dns") == "10.96.0.10"


# --- 2.1.2 DNS配置 ----------------------------------------------------------------------------------------------------


def test_coredns_answers_the_guide_records(sg):
    c = cl(sg)
    r = dns.probe_dns(c, "default/client", "my-service")
    assert r["ok"] and r["addresses"] == [sg.cluster_ip("default/my-service")]
    assert r["resolved_as"] == "my-service.default.svc.cluster.local."
    # SRV for a named port, PTR for a Service IP, a-b-c-d.ns.pod (pods insecure), NXDOMAIN with the zone's SOA
    srv = dns.probe_dns(c, "default/client", "_https._tcp.ingress-nginx-controller.ingress-nginx.svc.cluster.local",
                        "SRV")
    assert srv["ok"] and srv["queries"][-1]["answers"][0]["data"][2] == 443
    rev = ".".join(reversed(sg.cluster_ip("lb-demo/my-service").split("."))) + ".in-addr.arpa"
    ptr = dns.probe_dns(c, "default/client", rev, "PTR")
    assert ptr["ok"] and ptr["addresses"] == ["my-service.lb-demo.svc.cluster.local."]
    ip = sg.pod_ip("default/nginx")
    pod = dns.probe_dns(c, "default/client", f"{ip.replace('.', '-')}.default.pod.cluster.local")
    assert pod["ok"] and pod["addresses"] == [ip]
    nx = dns.probe_dns(c, "default/client", "nothing.default.svc.cluster.local.")
    assert not nx["ok"] and nx["queries"][-1]["rcode"] == "NXDOMAIN"
    assert nx["queries"][-1]["authority"][0]["type"] == "SOA" and nx["queries"][-1]["aa"]
    # names outside the cluster: forward . /etc/resolv.conf (the node's resolver, on the external host)
    ext = dns.probe_dns(c, "default/client", "example.com")
    assert ext["ok"] and ext["addresses"] == ["203.0.113.10"]


# --- 2.2.1 Pod网络配置 --------------------------------------------------------------------------------------------------


def test_nginx_pod_resolv_conf_is_what_kubelet_writes(sg):
    out = sg.exec("default/nginx", "cat", "/etc/resolv.conf").stdout
    assert out == ("search default.svc.cluster.local svc.cluster.local cluster.local ns1.svc.cluster.local\n"
                   "nameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5\n")
    look = sg.exec("default/nginx", "nslookup", "my-service")
    assert "Name:\tmy-service.default.svc.cluster.local" in look.stdout
    assert sg.cluster_ip("default/my-service") in look.stdout
    assert ok(sg, "default/client", "default/nginx", 80)


# --- 2.2.2 多网卡支持 ----------------------------------------------------------------------------------------------------


def test_macvlan_attachment_gives_net1_from_the_range(sg):
    addrs = {}
    for pod in ("default/samplepod-1", "default/samplepod-2"):
        out = sg.exec(pod, "ip", "-d", "-4", "addr", "show", "net1").stdout
        assert "macvlan mode bridge" in out
        addrs[pod] = re.search(r"inet (\S+)/24", out).group(1)
        assert ipaddress.ip_address("192.168.1.200") <= ipaddress.ip_address(addrs[pod]) <= \
            ipaddress.ip_address("192.168.1.216")
    assert len(set(addrs.values())) == 2
    # across nodes, over the macvlans on each node's eth0 (the underlay segment)
    r = sg.exec("default/samplepod-1", "ping", "-c1", "-W1", addrs["default/samplepod-2"], check=False)
    assert r.returncode == 0, r.stdout


# --- 3.1 Service配置 -------------------------------------------------------------------------------------------------


def _answers(c, src, dst, n=12):
    return {c.probe(src, dst, timeout=1.0)["answered_by"] for _ in range(n)}


def test_clusterip_service_to_target_port_9376(sg):
    r = sg.probe("default/client", "svc/default/my-service")
    assert r["ok"] and r["answer"]["port"] == 9376 and r["answered_by"].startswith("default/myapp-")
    assert len(_answers(sg, "default/client", "svc/default/my-service")) == 2
    # not from outside: the external host has no route to the Service CIDR, so its own kernel refuses the connect
    # (ENETUNREACH, no packet leaves: no denial by anyone); the same address answers a pod
    cip = sg.cluster_ip("default/my-service") + ":80"
    r = sg.probe("external", cip, timeout=0.5)
    assert (r["verdict"], r["detail"], r["icmp"]) == ("unreachable", "Network is unreachable", None), r
    sg.assert_reachable("default/client", cip)


def test_nodeport_service_on_30007_of_every_node(sg):
    for node in ("node-1", "node-2", "node-3"):
        r = sg.probe("external", f"nodeport/{node}:30007")
        assert r["ok"] and r["answered_by"].startswith("nodeport-demo/myapp-") and r["answer"]["port"] == 80


def test_loadbalancer_service_from_outside(sg):
    c = cl(sg)
    lb = c.allocations.services["lb-demo/my-service"].load_balancer_ip
    assert lb in ipaddress.ip_network("192.168.240.0/28")
    r = sg.probe("external", "lb/lb-demo/my-service")
    assert r["ok"] and r["answered_by"].startswith("lb-demo/myapp-") and r["answer"]["port"] == 9376


# --- 3.2 Ingress配置 -------------------------------------------------------------------------------------------------


def test_minimal_ingress_rewrites_testpath_to_root(sg):
    a = httpprobe.probe_url(cl(sg), "external", "https://https-example.foo.com/")["resolved"]["ip"]
    for path in ("/testpath", "/testpath/deeper/page"):
        r = httpprobe.probe_url(cl(sg), "external", f"http://{a}{path}")
        assert r["status"] == 200 and r["backend"]["pod"].startswith("default/test-")
        assert r["backend"]["uri"] == "/"  # nginx.ingress.kubernetes.io/rewrite-target: /
    assert httpprobe.probe_url(cl(sg), "external", f"http://{a}/elsewhere")["status"] == 404


def test_tls_example_ingress_serves_its_secret(sg):
    r = httpprobe.probe_url(cl(sg), "external", "https://https-example.foo.com/")
    assert r["status"] == 200 and r["backend"]["pod"].startswith("default/service1-")
    assert r["tls"]["source"] == "Secret default/testsecret-tls" and r["tls"]["host_matches"]
    assert httpprobe.probe_url(cl(sg), "external", "http://https-example.foo.com/")["status"] == 308
    out = sg.exec("external", "curl", "-s", "--cacert", f"{cl(sg).record.dir}/ingress/certs/default-testsecret-tls.crt",
                  "https://https-example.foo.com/").stdout  # verified against the Secret's certificate
    assert '"owner": "default/service1-' in out


# --- 4 网络策略 --------------------------------------------------------------------------------------------------------


def test_default_deny_ingress(sg):
    blocked(sg, "policy-deny/peer", "policy-deny/server", 80)
    blocked(sg, "default/client", "policy-deny/server", 80)
    assert ok(sg, "policy-deny/server", "default/nginx", 80)  # egress is not affected


def test_allow_frontend_to_backend_on_tcp_80_only(sg):
    assert ok(sg, "policy-frontend/frontend", "policy-frontend/backend", 80)
    blocked(sg, "policy-frontend/frontend", "policy-frontend/backend", 81)  # the backend serves 81 too
    blocked(sg, "policy-frontend/other", "policy-frontend/backend", 80)
    assert ok(sg, "policy-frontend/other", "policy-frontend/frontend", 80)  # unselected pods stay open


def test_allow_namespace_policy(sg):
    assert ok(sg, "myproject/client", "policy-ns/db", 5432)
    blocked(sg, "policy-ns/neighbour", "policy-ns/db", 5432)  # same namespace, no project label
    blocked(sg, "default/client", "policy-ns/db", 5432)


def test_allow_external_ipblock_with_except(sg):
    """Through the LoadBalancer with externalTrafficPolicy: Local the client keeps its address."""
    r = sg.probe("external@172.17.0.10", "lb/policy-cidr/web")
    assert r["ok"] and r["answer"]["client_ip"] == "172.17.0.10"
    blocked(sg, "external@172.17.1.10", "lb/policy-cidr/web", control="external@172.17.0.10")  # the except
    blocked(sg, "external", "lb/policy-cidr/web", control="external@172.17.0.10")  # 172.18.0.1: outside the block
    blocked(sg, "default/client", "policy-cidr/web", 80)  # pods: outside the block


def test_default_allow_all_and_default_deny_all(sg):
    assert ok(sg, "default/client", "policy-allow-all/open", 80)
    assert ok(sg, "policy-allow-all/open", "default/nginx", 80)
    blocked(sg, "default/client", "policy-deny-all/closed", 80)
    blocked(sg, "policy-deny-all/closed", "default/nginx", 80)  # egress: rejected on closed's own node


# --- 5.2 排查方法 and 6.1 内核参数 --------------------------------------------------------------------------------------


def test_the_guide_network_diagnostics(sg):
    target = sg.pod_ip("default/samplepod-1")
    assert sg.exec("default/client", "ping", "-c1", "-W1", target).returncode == 0
    tr = sg.exec("default/client", "traceroute", "-n", "-w", "1", "-q", "1", target).stdout
    assert tr.strip().splitlines()[-1].split()[1] == target  # the last hop is the pod
    assert "Address: " + sg.cluster_ip("default/my-service") in sg.exec("default/client", "nslookup",
                                                                        "my-service").stdout


def emu(sg, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args, "--cluster", sg.name], capture_output=True, text=True)


def test_the_guide_service_checks(sg):
    """kubectl get endpoints <service-name>, kubectl get svc, kubectl get events --field-selector
    involvedObject.kind=Service."""
    out = emu(sg, "get", "endpoints", "my-service")
    assert out.returncode == 0, out.stderr
    c = cl(sg)
    ready = sorted(f"{c.plan.pod(p.key).ip}:9376" for p in c.topology.pods
                   if p.namespace == "default" and p.labels.get("app") == "MyApp")
    row = out.stdout.splitlines()[1].split()
    assert row[0] == "my-service" and sorted(row[1].split(",")) == ready
    missing = emu(sg, "get", "endpoints", "nope")
    assert missing.returncode == 1 and missing.stderr.strip() == \
        'Error from server (NotFound): endpoints "nope" not found'
    ev = emu(sg, "get", "events", "-n", "lb-demo", "--field-selector", "involvedObject.kind=Service")
    rows = [line.split(None, 4) for line in ev.stdout.splitlines()[1:]]
    assert [(r[2], r[3]) for r in rows] == [("EnsuringLoadBalancer", "service/my-service"),
                                            ("EnsuredLoadBalancer", "service/my-service")], ev.stdout
    assert "Scheduled" not in ev.stdout  # the selector keeps the Pods' events out
    bad = emu(sg, "get", "events", "--field-selector", "spec.foo=bar")
    assert bad.returncode == 2 and "field label not supported: spec.foo" in bad.stderr


def test_the_guide_policy_checks(sg):
    """kubectl get networkpolicies: NAME and POD-SELECTOR as kubectl formats them ({} is <none>)."""
    out = emu(sg, "get", "networkpolicies", "-A", "-o", "wide").stdout.splitlines()
    assert out[0].split() == ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE", "POLICY-TYPES", "PODS"]
    rows = {r.split()[1]: r.split() for r in out[1:]}
    assert rows["allow-frontend"][2] == "app=backend" and rows["allow-frontend"][4:] == ["Ingress", "1"]
    assert rows["default-deny-ingress"][2] == "<none>"
    assert rows["default-deny-all"][4] == "Ingress,Egress"
    one = json.loads(emu(sg, "get", "netpol", "allow-ns-policy", "-n", "policy-ns", "-o", "json").stdout)
    assert [p["name"] for p in one] == ["allow-ns-policy"] and one[0]["selectedPods"] == ["policy-ns/db"]
    missing = emu(sg, "get", "netpol", "nope", "-n", "policy-ns")
    assert missing.returncode == 1 and missing.stderr.strip() == \
        'Error from server (NotFound): networkpolicies.networking.k8s.io "nope" not found'


def test_the_guide_log_analysis(sg, tmp_path):
    """kubectl logs -n kube-system <kube-proxy-pod>; kubectl logs -n kube-system -l k8s-app=kube-dns, with the
    `log` plugin added to the Corefile as the DNS debugging guide says, and an upstream that refuses."""
    pods = json.loads(emu(sg, "get", "pods", "-n", "kube-system", "-o", "json").stdout)
    proxy = next(p for p in pods if p["labels"].get("k8s-app") == "kube-proxy" and p["node"] == "node-2")
    kp = emu(sg, "logs", "-n", "kube-system", proxy["name"]).stdout.splitlines()
    assert kp[0].endswith('"Using iptables proxy"')
    c = cl(sg)
    ports = len(inputs.node_states(c.topology, c.allocations)["node-2"].services)  # its service ports
    assert any('"Reloading service iptables data"' in line and f"numServices={ports} " in line for line in kp), kp
    assert '"SyncProxyRules complete" elapsed="' in kp[-1]
    # kubectl exec -n kube-system kube-proxy-... -- iptables-save: the pod is its node's namespace
    rules = sg.exec(f"kube-system/{proxy['name']}", "iptables-save", "-t", "nat").stdout
    node = sg.exec("node/node-2", "iptables-save", "-t", "nat").stdout

    def rule_lines(text: str) -> list[str]:  # without the chain counters, which traffic moves
        return [line for line in text.splitlines() if line.startswith("-A ")]
    assert ":KUBE-SERVICES - [0:0]" in rules and rule_lines(rules) == rule_lines(node) and rule_lines(rules)

    # journalctl -u kubelet | grep cni: the built-in wiring runs no plugin, and says where to look instead
    cni = emu(sg, "cni", "log").stdout
    assert "built-in flannel" in cni and "runs no plugin binary" in cni and "emu up --dry-run" in cni

    corefile = next(t for n, t in guide_manifests() if n == "coredns")
    node_ip = str(cl(sg).plan.nodes[0].ip)  # nothing listens on :53 there: the forward is refused
    debug = corefile.replace("errors\n", "log\n           errors\n").replace(
        "forward . /etc/resolv.conf", f"forward . {node_ip}")
    f = tmp_path / "coredns-log.yaml"
    f.write_text(debug)
    sg.apply(str(f))

    def dns_logs() -> str:
        return emu(sg, "logs", "-n", "kube-system", "-l", "k8s-app=kube-dns", "--tail", "-1", "--prefix").stdout
    try:
        # the reload plugin notices the new Corefile, then the log plugin runs
        wait_until(lambda: dns_logs().count("[INFO] Reloading complete") >= 2, what="CoreDNS to reload the Corefile")
        sg.exec("default/client", "nslookup", "my-service")
        sg.exec("default/client", "nslookup", "-timeout=5", "example.com.", check=False)
        out = dns_logs()
    finally:
        f.write_text(corefile)
        sg.apply(str(f))
    lines = out.splitlines()
    dns_pods = {p["name"] for p in pods if p["labels"].get("k8s-app") == "kube-dns"}
    assert {line.split("]")[0].split("/")[1] for line in lines} == dns_pods  # each coredns pod's own log
    assert sum(line.endswith("] .:53") for line in lines) == 2 and sum("CoreDNS-1.11.1" in line for line in lines) == 2
    assert any("[INFO] Reloading complete" in line for line in lines)
    client = sg.pod_ip("default/client")
    q = [line for line in lines if f"[INFO] {client}:" in line and '"A IN my-service.default.svc.cluster.local. udp'
         in line]
    assert q and re.search(r'" NOERROR qr,aa,rd(,ra)? \d+ \d+(\.\d+)?s$', q[0]), lines
    err = [line for line in lines if "[ERROR] plugin/errors: 2 example.com. A: read udp" in line]
    assert err and err[0].endswith(f"->{node_ip}:53: read: connection refused"), lines


def test_logs_follow_shows_the_next_sync(sg):
    """kubectl logs -f: a pod turning not-ready makes every kube-proxy sync again, and the follower prints it."""
    pods = json.loads(emu(sg, "get", "pods", "-n", "kube-system", "-o", "json").stdout)
    proxy = next(p["name"] for p in pods if p["labels"].get("k8s-app") == "kube-proxy")
    before = len(emu(sg, "logs", "-n", "kube-system", proxy).stdout.splitlines())
    f = subprocess.Popen([sys.executable, "-m", "emu", "logs", "-f", "-n", "kube-system", proxy, "--cluster",
                          sg.name], stdout=subprocess.PIPE, text=True)
    guard = threading.Timer(30, f.kill)  # a follower that never prints fails the test instead of hanging it
    guard.start()
    try:
        for _ in range(before):
            f.stdout.readline()  # what was there already
        target = next(p.key for p in cl(sg).topology.pods if p.namespace == "default" and
                      p.labels.get("app") == "MyApp")
        sg.mark(target, "not-ready")
        sg.mark(target, "ready")
        got = [f.stdout.readline().rstrip("\n") for _ in range(4)]  # two syncs, two lines each
    finally:
        guard.cancel()
        f.terminate()
        f.wait(timeout=10)
    assert [line.split(" ", 1)[1].split(" ")[0] for line in got] == [
        '"Reloading', '"SyncProxyRules', '"Reloading', '"SyncProxyRules'], got


def test_node_kernel_parameters(sg):
    want = {"net.core.somaxconn": "32768", "net.ipv4.tcp_max_syn_backlog": "8096", "net.ipv4.tcp_tw_reuse": "1",
            "net.ipv4.tcp_fin_timeout": "15"}
    for node in ("node-1", "node-2", "node-3"):
        out = sg.exec(f"node/{node}", "sysctl", *want).stdout
        assert all(f"{k} = {v}" in out for k, v in want.items()), out
    from emu.report import views
    item = views.nodes(cl(sg)).items[0]
    assert item["sysctls"] == want
    assert item["sysctlsNotApplied"]["net.core.netdev_max_backlog"]["asked"] == "16384"


# --- every manifest of the guide, verbatim ---------------------------------------------------------------------------


def guide_manifests() -> list[tuple[str, str]]:
    """(first line of the block's metadata.name, YAML) for every ```yaml block that is a manifest."""
    if not GUIDE.exists():
        pytest.skip(f"the seed guide is not at {GUIDE} (shared/ is expected beside the checkout)")
    out = []
    for m in re.finditer(r"^([ \t]*)```yaml\n(.*?)^[ \t]*```", GUIDE.read_text(), re.S | re.M):
        lines = m.group(2).splitlines()
        indent = len(m.group(1))
        text = "\n".join(line[indent:] if line[:indent].strip() == "" else line for line in lines) + "\n"
        if "apiVersion:" not in text:
            continue  # the kube-controller-manager flags (the topology's Cluster spec carries them)
        name = re.search(r"^\s+name: (\S+)", text, re.M).group(1)
        out.append((name, text))
    return out


def test_the_guide_has_the_manifests_we_think(sg):
    names = [n for n, _ in guide_manifests()]
    assert names == ["coredns", "nginx", "macvlan-conf", "my-service", "my-service", "my-service", "minimal-ingress",
                     "tls-example-ingress", "default-deny-ingress", "allow-frontend", "allow-ns-policy",
                     "allow-external", "default-allow-all", "default-deny-all"]


def test_every_guide_manifest_applies_verbatim_and_does_what_it_says(sg, tmp_path):
    """Applied in the guide's order to the default namespace, the way a reader would paste them."""
    blocks = guide_manifests()
    checks = {
        "my-service": lambda i: _service_type_check(sg, i),
        "default-deny-ingress": lambda i: blocked(sg, "default/client", "default/nginx", 80),
        # these select app=backend / db / web, which the default namespace does not have: nginx stays open
        "allow-frontend": lambda i: _selects_nothing(sg, "allow-frontend") and ok(sg, "default/client",
                                                                                   "default/nginx", 80),
        "allow-ns-policy": lambda i: _selects_nothing(sg, "allow-ns-policy"),
        "allow-external": lambda i: _selects_nothing(sg, "allow-external"),
        "default-allow-all": lambda i: ok(sg, "default/client", "default/nginx", 80),
        "default-deny-all": lambda i: blocked(sg, "default/client", "default/nginx", 80),
    }
    svc_index = 0
    applied_policies = []
    # nodePort 30007 is nodeport-demo/my-service's: the API server would refuse a second one, and so does emu
    theirs = tmp_path / "nodeport-demo.yaml"
    theirs.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: my-service, namespace: nodeport-demo}\n")
    sg.delete(str(theirs))
    for i, (name, text) in enumerate(blocks):
        f = tmp_path / f"{i:02d}-{name}.yaml"
        f.write_text(text)
        change = sg.apply(str(f))
        assert change is not None, name
        if name == "my-service":
            assert _service_type_check(sg, svc_index), f"my-service #{svc_index}"
            svc_index += 1
        elif name in checks:
            applied_policies.append(f)
            assert checks[name](i), name
            if name.startswith("default-"):  # one default policy at a time: take it away again
                sg.delete(str(f))
                applied_policies.remove(f)
        elif name in ("coredns", "nginx", "macvlan-conf", "minimal-ingress", "tls-example-ingress"):
            assert change.added == () and change.removed == (), f"{name} is in seed-guide.yaml as written"
    for f in applied_policies:
        sg.delete(str(f))
    # the guide's last my-service (LoadBalancer) replaced the ClusterIP one; put the topology's back
    restore = tmp_path / "restore.yaml"
    restore.write_text(blocks[3][1])
    sg.apply(str(restore))
    assert sg.probe("default/client", "svc/default/my-service")["ok"]
    own = re.search(r"(apiVersion: v1\nkind: Service\nmetadata:\n  name: my-service\n  namespace: nodeport-demo\n"
                    r".*?)\n---", SEED_GUIDE.read_text(), re.S).group(1)
    theirs.write_text(own + "\n")
    sg.apply(str(theirs))
    assert sg.probe("external", "nodeport/node-1:30007")["answered_by"].startswith("nodeport-demo/")


def _selects_nothing(sg, name: str) -> bool:
    from emu.addons.netpol.engine import Engine
    from emu.addons.netpol.model import Direction

    c = cl(sg)
    eng = Engine.for_cluster(c.topology, c.allocations)
    assert any(p.namespace == "default" and p.name == name for p in c.topology.network_policies), name
    return not any(pol.name == name for pod in c.topology.pods if pod.namespace == "default"
                   for pol in eng.selecting(pod, Direction.INGRESS))


def _service_type_check(sg, index: int) -> bool:
    c = cl(sg)
    svc = next(s for s in c.topology.services if s.key == "default/my-service")
    if index == 0:
        return svc.type == "ClusterIP" and sg.probe("default/client", "svc/default/my-service")["ok"]
    if index == 1:  # NodePort 30007 -> targetPort 80: the MyApp pods of default listen on 9376 only, so the
        # endpoint's kernel answers the SYN with a RST; the same pod answers on 9376
        pod = next(p.key for p in c.topology.pods if p.namespace == "default" and p.labels.get("app") == "MyApp")
        sg.assert_blocked("external", "nodeport/node-2:30007", by="reset", control=("default/client", pod, 9376))
        return svc.type == "NodePort"
    r = sg.probe("external", "lb/default/my-service")
    return svc.type == "LoadBalancer" and r["ok"] and r["answer"]["port"] == 9376
