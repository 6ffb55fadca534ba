"""Ingress through a real nginx in the ingress-nginx controller pod: host and path rules (Prefix, Exact),
rewrite-target, TLS from a Secret (self-signed on request), the default certificate, ssl-redirect, 503 without
endpoints, and live changes (new Ingresses, endpoints, Secrets) reloading nginx."""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections import Counter

import pytest

from emu.cluster import lifecycle as clusters
from emu.apply import processes, state
from emu.addons.ingress import controller, httpprobe, nginxproc, routing
from tests.conftest import TOPOLOGIES

pytestmark = pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v nginx"], capture_output=True).returncode,
                                reason="nginx is not installed (tools/setup installs nginx-light)")
LB = "192.168.240.1"


@pytest.fixture(scope="module")
def ing(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "ingress.yaml")) as c:
        yield c


def get(c, url, src="external"):
    return httpprobe.probe_url(clusters.open_cluster(c.name), src, url)


def curl(c, *args):
    r = c.exec("external", "curl", "-s", "--max-time", "5", *args, check=False)
    return r.stdout


def test_nginx_runs_in_the_controller_pod_and_the_service_is_a_load_balancer(ing):
    cl = clusters.open_cluster(ing.name)
    key = routing.controller_pod(cl)
    assert key and key.startswith("ingress-nginx/ingress-nginx-controller-")
    pids = nginxproc.pids(state.load(ing.name))
    assert len(pids) == 1
    pid = pids.pop()
    # the master lives in the controller pod's network namespace, not the root one
    ns_inode = os.stat(f"/run/netns/{cl.plan.pod(key).netns.name}").st_ino
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == ns_inode
    assert routing.address(cl) == routing.Address(LB, 80, 443, "LoadBalancer")


def test_tls_host_gets_the_secret_certificate_and_its_backend(ing):
    r = get(ing, "https://https-example.foo.com/")
    assert r["ok"] and r["status"] == 200
    assert r["tls"]["source"] == "Secret default/testsecret-tls" and r["tls"]["host_matches"]
    assert r["tls"]["names"] == ["https-example.foo.com"]
    assert r["backend"]["pod"].startswith("default/service1-")
    assert r["backend"]["uri"] == "/" and r["backend"]["x_forwarded_proto"] == "https"
    assert "[default-service1-80]" in r["access_log"]


def test_plain_http_to_a_tls_host_is_redirected_with_308(ing):
    r = get(ing, "http://https-example.foo.com/some/path?q=1")
    assert r["status"] == 308 and r["headers"]["location"] == "https://https-example.foo.com/some/path?q=1"


def test_rewrite_target_replaces_the_whole_uri(ing):
    """The seed's minimal-ingress: path /testpath with rewrite-target / becomes `location ~* "^/testpath"` and
    `rewrite "(?i)/testpath" / break;`, so every matching URI reaches the backend as / (any host)."""
    for path in ("/testpath", "/testpath/a/b", "/TESTPATH/x", "/testpathology"):
        r = get(ing, f"http://{LB}{path}")
        assert r["status"] == 200 and r["backend"]["pod"].startswith("default/test-"), path
        assert r["backend"]["uri"] == "/", path
    assert get(ing, f"http://{LB}/other")["status"] == 404


def test_prefix_and_exact_paths(ing):
    ok = {"/exact": "exact", "/app": "service1", "/app/": "service1", "/app/x/y": "service1"}
    for path, svc in ok.items():
        r = get(ing, f"http://paths.example.com{path}")
        assert r["status"] == 200 and r["backend"]["pod"].startswith(f"default/{svc}-"), path
        assert r["backend"]["uri"] == path  # no rewrite: the backend sees the path as sent
    for path in ("/exact/", "/exact/x", "/application", "/"):
        assert get(ing, f"http://paths.example.com{path}")["status"] == 404, path
    assert get(ing, "http://paths.example.com/empty/x")["status"] == 503  # a Service without endpoints


def test_hosts_without_tls_get_the_default_fake_certificate(ing):
    r = get(ing, "https://paths.example.com/app")
    assert r["status"] == 200 and not r["tls"]["host_matches"]
    assert r["tls"]["source"] == "the controller's default (fake) certificate"
    assert "Kubernetes Ingress Controller Fake Certificate" in r["tls"]["subject"]


def test_requests_are_balanced_over_the_ready_endpoints(ing):
    seen = Counter(get(ing, f"http://{LB}/testpath")["backend"]["pod"] for _ in range(8))
    assert len(seen) == 2  # nginx's round robin over both test pods


def test_external_host_names_ingress_hosts_and_curl_works(ing):
    with open(f"/etc/netns/{ing.name}.external/hosts") as f:
        hosts = f.read()
    assert f"{LB}\thttps-example.foo.com paths.example.com" in hosts
    out = curl(ing, "-k", "https://https-example.foo.com/")
    assert '"owner": "default/service1-' in out
    assert "Kubernetes Ingress Controller Fake Certificate" in ing.exec(
        "external", "sh", "-c", "openssl s_client -connect paths.example.com:443 -servername paths.example.com "
        "</dev/null 2>/dev/null | openssl x509 -noout -subject").stdout


def test_pods_reach_the_ingress_too(ing):
    r = get(ing, "https://https-example.foo.com/", src=next(p.key for p in ing.model.pods if p.name.startswith(
        "exact-")))
    assert r["status"] == 200 and r["backend"]["pod"].startswith("default/service1-")


def test_not_ready_endpoints_leave_the_upstream(ing):
    pods = sorted(p.key for p in ing.model.pods if p.name.startswith("test-"))
    ing.mark(pods[0], "not-ready")
    try:
        seen = {get(ing, f"http://{LB}/testpath")["backend"]["pod"] for _ in range(6)}
        assert seen == {pods[1]}
    finally:
        ing.mark(pods[0], "ready")
    seen = {get(ing, f"http://{LB}/testpath")["backend"]["pod"] for _ in range(8)}
    assert seen == set(pods)


def test_live_ingress_and_secret_changes_reload_nginx(ing, tmp_path):
    f = tmp_path / "new.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: late}
        spec:
          ingressClassName: nginx
          tls: [{hosts: [late.example.com], secretName: late-tls}]
          rules:
          - host: late.example.com
            http:
              paths: [{path: /, pathType: Prefix, backend: {service: {name: exact, port: {number: 80}}}}]
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: late-tls, annotations: {emu.dev/self-signed: "true"}}
        type: kubernetes.io/tls
        ---
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: other-class}
        spec:
          ingressClassName: traefik
          rules:
          - host: traefik.example.com
            http:
              paths: [{path: /, pathType: Prefix, backend: {service: {name: exact, port: {number: 80}}}}]
        """))
    pid_before = nginxproc.pids(state.load(ing.name))
    ing.apply(str(f))
    try:
        assert nginxproc.pids(state.load(ing.name)) == pid_before  # reloaded (SIGHUP), not restarted
        r = get(ing, "https://late.example.com/")
        assert r["status"] == 200 and r["tls"]["source"] == "Secret default/late-tls" and r["tls"]["host_matches"]
        assert r["backend"]["pod"].startswith("default/exact-")
        # an Ingress of a class no controller serves: no server block, the default server answers 404
        r = get(ing, f"http://{LB}/")
        assert r["status"] == 404
        with pytest.raises(httpprobe.URLError, match="not an Ingress host"):
            get(ing, "http://traefik.example.com/")
    finally:
        ing.delete(str(f))
    with pytest.raises(httpprobe.URLError):
        get(ing, "https://late.example.com/")
    assert "late.example.com" not in open(f"/etc/netns/{ing.name}.external/hosts").read()


def test_a_certificate_for_another_host_falls_back_to_the_default(ing, tmp_path):
    from emu.addons.ingress import certs

    crt, key = certs.self_signed(["someone-else.example.com"])
    secret = certs.secret_manifest("default", "wrong-tls", crt, key)
    import yaml
    f = tmp_path / "wrong.yaml"
    f.write_text(yaml.safe_dump(secret) + "---\n" + textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata: {name: wrong}
        spec:
          ingressClassName: nginx
          tls: [{hosts: [wrong.example.com], secretName: wrong-tls}]
          rules:
          - host: wrong.example.com
            http:
              paths: [{path: /, pathType: Prefix, backend: {service: {name: exact, port: {number: 80}}}}]
        """))
    ing.apply(str(f))
    try:
        r = get(ing, "https://wrong.example.com/")
        assert r["status"] == 200 and r["tls"]["source"] == "the controller's default (fake) certificate"
        warnings = controller.warnings(state.load(ing.name))
        assert any("default/wrong-tls" in w and "wrong.example.com" in w for w in warnings)
        # without a certificate of its own, the host is not redirected to https
        assert get(ing, "http://wrong.example.com/")["status"] == 200
    finally:
        ing.delete(str(f))


def test_the_ingress_comes_and_goes_with_ingresses_over_a_node_port(emu_cluster, tmp_path):
    """A cluster without a loadBalancerPool: the first Ingress applied brings the controller (NodePort Service),
    deleting the last one takes it away, and down leaves no nginx behind."""
    with emu_cluster(str(TOPOLOGIES / "flannel-vxlan.yaml")) as c:
        f = tmp_path / "i.yaml"
        f.write_text(textwrap.dedent("""\
            apiVersion: v1
            kind: Service
            metadata: {name: web}
            spec: {selector: {app: web}, ports: [{port: 80}]}
            ---
            apiVersion: networking.k8s.io/v1
            kind: Ingress
            metadata: {name: web}
            spec:
              ingressClassName: nginx
              rules:
              - host: web.example.com
                http:
                  paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
            """))
        c.apply(str(f))
        cl = clusters.open_cluster(c.name)
        a = routing.address(cl)
        assert a.via == "NodePort" and a.ip == str(cl.plan.nodes[0].ip) and 30000 <= a.http <= 32767
        r = httpprobe.probe_url(cl, "external", "http://web.example.com/")
        assert r["status"] == 200 and r["resolved"]["port"] == a.http
        pid = nginxproc.pids(state.load(c.name)).pop()
        c.delete(str(f))
        assert routing.controller_pod(clusters.open_cluster(c.name)) is None
        assert not nginxproc.pids(state.load(c.name))
        c.apply(str(f))
        pid = nginxproc.pids(state.load(c.name)).pop()
    assert nginx_gone(pid)
    assert not os.path.exists(f"/etc/netns/{c.name}.external/hosts")


def test_down_after_the_controller_was_killed_still_cleans_up(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "ingress.yaml")) as c:
        pid = nginxproc.pids(state.load(c.name)).pop()
        workers = nginxproc.children(pid)
        assert workers
        os.kill(pid, signal.SIGKILL)  # a crashed nginx master: its workers may linger in the pod's namespace
    for w in workers | {pid}:
        assert nginx_gone(w)


def nginx_gone(pid: int) -> bool:
    """No nginx runs as `pid` (it exited, is a zombie, or the pid was reused); read without the race of an
    exists-then-open check on /proc."""
    argv = processes.cmdline(pid)
    return argv is None or "nginx" not in " ".join(argv)
