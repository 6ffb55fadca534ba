"""Ingress parsing and ingress-nginx's server/location computation and nginx.conf rendering (no root)."""
from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from emu.model.documents import Collector, Document
from emu.addons.ingress import addon, documents, nginxconf, parse
from emu.addons.ingress.model import Backend, Ingress, IngressClass, Path, Rule, TLS

MINIMAL = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "minimal-ingress",
                        "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
           "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [
               {"path": "/testpath", "pathType": "Prefix",
                "backend": {"service": {"name": "test", "port": {"number": 80}}}}]}}]}}


def _ing(body):
    c = Collector()
    ing = parse.parse_ingress(Document("t.yaml", 1, body), c)
    return ing, [p.render() if hasattr(p, "render") else str(p) for p in c.problems]


def test_the_seed_minimal_ingress_parses():
    ing, problems = _ing(MINIMAL)
    assert not problems
    assert ing.class_name == "nginx" and ing.rules[0].host == ""
    assert ing.rules[0].paths[0] == Path("/testpath", "Prefix", Backend("test", port_number=80))


@pytest.mark.parametrize("path_item, field, words", [
    ({"path": "/a", "backend": {"service": {"name": "s", "port": {"number": 80}}}}, "pathType", "required"),
    ({"path": "a", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
     "path", "absolute"),
    ({"path": "/a", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80,
                                                                                           "name": "h"}}}},
     "backend.service.port", "exactly one"),
    ({"path": "/a", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 70000}}}},
     "port.number", "not a port"),
    ({"path": "/a//b", "pathType": "Exact", "backend": {"service": {"name": "s", "port": {"number": 80}}}},
     "path", "must not contain"),
])
def test_path_problems_name_the_field(path_item, field, words):
    body = {**MINIMAL, "spec": {"rules": [{"http": {"paths": [path_item]}}]}}
    ing, problems = _ing(body)
    assert ing is None and len(problems) == 1
    assert "Ingress minimal-ingress" in problems[0] and field in problems[0] and words in problems[0]


@pytest.mark.parametrize("host, ok", [("foo.bar.com", True), ("*.foo.com", True), ("10.0.0.1", False),
                                      ("Foo.com", False), ("*", False), ("a.*.com", False)])
def test_rule_hosts_follow_the_api_validation(host, ok):
    body = {**MINIMAL, "spec": {"rules": [{"host": host, "http": MINIMAL["spec"]["rules"][0]["http"]}]}}
    ing, problems = _ing(body)
    assert (ing is not None) == ok, problems


def test_rules_or_default_backend_required():
    _, problems = _ing({**MINIMAL, "spec": {}})
    assert problems and "either defaultBackend or rules" in problems[0]


def _secret(body):
    c = Collector()
    s = parse.parse_secret(Document("t.yaml", 2, {"apiVersion": "v1", "kind": "Secret", **body}), c)
    return s, [str(p) for p in c.problems]


def test_tls_secrets_need_pem_data_unless_self_signed_is_asked_for():
    s, problems = _secret({"metadata": {"name": "x"}, "type": "kubernetes.io/tls"})
    assert s is None and "data.tls.crt" in problems[0] and "emu.dev/self-signed" in problems[0]
    s, problems = _secret({"metadata": {"name": "x", "annotations": {"emu.dev/self-signed": "true"}},
                           "type": "kubernetes.io/tls"})
    assert not problems and s.self_signed
    s, problems = _secret({"metadata": {"name": "x"}, "type": "kubernetes.io/tls",
                           "data": {"tls.crt": "!!notbase64", "tls.key": "eA=="}})
    assert s is None and "base64" in problems[0]
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    s, problems = _secret({"metadata": {"name": "x"}, "type": "kubernetes.io/tls",
                           "data": {"tls.crt": pem, "tls.key": pem}})
    assert s is None and "data.tls.key" in problems[0] and "private key" in problems[0]
    s, problems = _secret({"metadata": {"name": "x"}, "type": "Opaque", "stringData": {"password": "p"}})
    assert not problems and s.type == "Opaque"


# --- which Ingresses ingress-nginx serves -------------------------------------------------------------------------


def test_the_addon_comes_with_the_first_ingress_and_names_the_default_class():
    docs = [Document("t.yaml", 1, MINIMAL)]
    out = documents.addon_documents("t.yaml", docs, with_lb=True)
    kinds = {(d.kind, d.meta.get("name")) for d in out}
    assert kinds == {("Namespace", "ingress-nginx"), ("IngressClass", "nginx"),
                     ("Deployment", "ingress-nginx-controller"), ("Service", "ingress-nginx-controller")}
    svc = next(d for d in out if d.kind == "Service")
    assert svc.body["spec"]["type"] == "LoadBalancer"
    assert documents.addon_documents("t.yaml", docs, with_lb=False)[-1].body["spec"]["type"] == "NodePort"
    assert documents.addon_documents("t.yaml", [], with_lb=True) == []


def test_served_classes():
    ours = (IngressClass("nginx", "k8s.io/ingress-nginx", default=True), IngressClass("other", "example.com/x"))
    ing = Ingress("default", "i", None, ())
    assert addon.served_class(ing, ours)  # no class: the default class is ingress-nginx's
    assert not addon.served_class(ing, (IngressClass("nginx", "k8s.io/ingress-nginx"),))  # no default class
    assert not addon.served_class(Ingress("default", "i", "other", ()), ours)
    assert addon.served_class(Ingress("default", "i", "nginx", ()), ours)


# --- servers and locations as ingress-nginx computes them ---------------------------------------------------------


def _resolve(ns, backend):
    if backend.service == "missing":
        return None
    servers = () if backend.service == "empty" else ("10.244.1.2:8080", "10.244.2.2:8080")
    return nginxconf.Upstream(nginxconf.upstream_name(ns, backend), servers)


def _no_cert(ing, host):
    return None, None


def _server(cfg, host):
    return next(s for s in cfg.servers if s.hostname == host)


def test_rewrite_target_makes_every_location_of_the_server_a_regex():
    ing, _ = _ing(MINIMAL)
    cfg = nginxconf.servers([ing], _resolve, _no_cert)
    default = _server(cfg, "_")
    assert default.enforce_regex
    assert [(loc.path, loc.path_type) for loc in default.locations] == [("/testpath", "Prefix"), ("/", "Prefix")]
    text = nginxconf.render(cfg, "/d", nginxconf.Certificate("/d/c", "/d/k", ""))
    assert 'location ~* "^/testpath" {' in text and 'location ~* "^/" {' in text
    assert 'rewrite "(?i)/testpath" "/" break;' in text
    assert 'upstream "default-test-80" {\n        server "10.244.1.2:8080" max_fails=0;' in text


def test_prefix_paths_get_a_trailing_slash_and_an_exact_twin():
    ing = Ingress("default", "p", "nginx", (Rule("a.example.com", (
        Path("/app", "Prefix", Backend("s", 80)), Path("/exact", "Exact", Backend("s", 80)),
        Path("/both", "Prefix", Backend("s", 80)), Path("/both", "Exact", Backend("t", 80)))),))
    cfg = nginxconf.servers([ing], _resolve, _no_cert)
    locs = [(loc.path, loc.path_type, loc.service) for loc in _server(cfg, "a.example.com").locations]
    # sorted by path descending, then by length descending (createServers)
    assert locs == [("/exact", "Exact", "s"), ("/both/", "Prefix", "s"), ("/both", "Exact", "t"),
                    ("/app/", "Prefix", "s"), ("/app", "Exact", "s"), ("/", "Prefix", "")]
    text = nginxconf.render(cfg, "/d", nginxconf.Certificate("/d/c", "/d/k", ""))
    assert 'location = "/app" {' in text and 'location "/app/" {' in text


def test_ssl_redirect_only_for_hosts_with_their_own_certificate():
    ing = Ingress("default", "t", None, (Rule("h.example.com", (Path("/", "Prefix", Backend("s", 80)),)),),
                  (TLS(("h.example.com",), "sec"),))
    cert = nginxconf.Certificate("/d/sec.crt", "/d/sec.key", "default/sec")
    cfg = nginxconf.servers([ing], _resolve, lambda i, h: (cert, None))
    text = nginxconf.render(cfg, "/d", nginxconf.Certificate("/d/c", "/d/k", ""))
    assert "return 308 https://$best_http_host$request_uri;" in text
    assert 'ssl_certificate     "/d/sec.crt";' in text
    cfg = nginxconf.servers([ing], _resolve, lambda i, h: (None, "no secret"))
    assert cfg.warnings == ("no secret",)
    assert "return 308" not in nginxconf.render(cfg, "/d", nginxconf.Certificate("/d/c", "/d/k", ""))
    off = Ingress("default", "t", None, ing.rules, ing.tls, annotations={
        "nginx.ingress.kubernetes.io/ssl-redirect": "false"})
    assert "return 308" not in nginxconf.render(nginxconf.servers([off], _resolve, lambda i, h: (cert, None)),
                                                "/d", nginxconf.Certificate("/d/c", "/d/k", ""))


def test_missing_services_and_empty_endpoints_answer_503_and_the_first_ingress_wins():
    a = Ingress("default", "a", "nginx", (Rule("", (Path("/x", "Prefix", Backend("missing", 80)),
                                                    Path("/y", "Prefix", Backend("empty", 80)))),))
    b = Ingress("default", "b", "nginx", (Rule("", (Path("/x", "Prefix", Backend("s", 80)),)),))
    cfg = nginxconf.servers([a, b], _resolve, _no_cert)
    assert any("Service default/missing port 80 not found" in w for w in cfg.warnings)
    assert any("Ingress default/b: path /x (Prefix)" in w and "already defined" in w for w in cfg.warnings)
    xs = [loc for loc in _server(cfg, "_").locations if loc.ingress_path == "/x"]
    assert {loc.ingress for loc in xs} == {"default/a"}
    text = nginxconf.render(cfg, "/d", nginxconf.Certificate("/d/c", "/d/k", ""))
    assert text.count("return 503;") == 4  # /x/, = /x, /y/, = /y
    assert "upstream default-empty-80" not in text  # nginx rejects an upstream without servers


def test_default_backend_of_an_ingress_takes_the_root_location():
    ing = Ingress("default", "d", "nginx", (), default_backend=Backend("s", 80))
    root = _server(nginxconf.servers([ing], _resolve, _no_cert), "_").locations[-1]
    assert root.path == "/" and root.service == "s"
    root = _server(nginxconf.servers([], _resolve, _no_cert), "_").locations[-1]
    assert root.upstream is None  # the controller's own 404


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (tools/setup)")
def test_nginx_accepts_the_rendered_configuration(tmp_path):
    from emu.addons.ingress import certs

    crt, key = certs.fake_certificate()
    (tmp_path / "c.pem").write_text(crt)
    (tmp_path / "k.pem").write_text(key)
    (tmp_path / "tmp").mkdir()
    ings = [_ing(MINIMAL)[0],
            Ingress("default", "t", None, (Rule("h.example.com", (Path("/", "Prefix", Backend("s", 80)),
                                                                 Path("/e", "Exact", Backend("empty", 80)))),),
                    (TLS(("h.example.com",), "sec"),))]
    cert = nginxconf.Certificate(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), "default/sec")
    cfg = nginxconf.servers(ings, _resolve, lambda i, h: (cert, None))
    text = nginxconf.render(cfg, str(tmp_path), nginxconf.Certificate(cert.cert, cert.key, ""))
    (tmp_path / "nginx.conf").write_text(text)
    r = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c",
                        str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert nginxconf.checksum(text) in text.split("\n", 1)[1]  # the status server returns it
