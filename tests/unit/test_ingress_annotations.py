"""Ingress annotation validation (ingress-nginx's validators and risk levels), path and backend checks, quoting and
the confinement of nginx.conf: table-driven, no root."""
from __future__ import annotations

import os

import pytest

from emu.model.documents import Collector, Document
from emu.addons.ingress import annotations, nginxconf, nginxsafe, parse
from emu.addons.ingress.model import Backend, Ingress, Path, Rule

P = "nginx.ingress.kubernetes.io/"
RT, UR, SR, FSR = P + "rewrite-target", P + "use-regex", P + "ssl-redirect", P + "force-ssl-redirect"

# (annotation, value, allowed) — the characters of validators.go's RegexPathWithCapture for rewrite-target,
# strconv.ParseBool's spellings for the booleans.
CASES = [
    (RT, "/", True), (RT, "/$1", True), (RT, "/$2/x/$1", True), (RT, "/a-b_c.d~e:f", True), (RT, "$1", True),
    (RT, "http://example.com/x", True), (RT, "/$request_uri", True),
    (RT, "/; alias /etc/shadow", False), (RT, "/x;", False), (RT, "/x break; access_log /tmp/x", False),
    (RT, '/x"', False), (RT, "/x'", False), (RT, "/x}", False), (RT, "/x{", False), (RT, "/x y", False),
    (RT, "/x\ny", False), (RT, "/x\\y", False), (RT, "/x#y", False), (RT, "/x?a=b", False), (RT, "/x$", False),
    (RT, "/$/x", False), (RT, "/é", False), (RT, "/x\n", False),  # `$` would match before a final newline
    (UR, "true", True), (UR, "false", True), (UR, "1", True), (UR, "F", True), (UR, "True", True),
    (UR, "yes", False), (UR, "true;", False), (UR, " true", False),
    (SR, "false", True), (SR, "TRUE", True), (SR, "on", False), (SR, 'true"', False),
    (FSR, "true", True), (FSR, "0", True), (FSR, "tRuE", False), (FSR, "1;", False),
]


@pytest.mark.parametrize("name, value, allowed", CASES)
def test_annotation_values_follow_ingress_nginx_validators(name, value, allowed):
    found = annotations.problems({name: value})
    assert (found == []) == allowed, found
    if not allowed:
        assert found == [(name, found[0][1])] and f"annotation {name} contains invalid value" in found[0][1]


def test_empty_values_are_not_validated_and_other_prefixes_are_ignored():
    assert annotations.problems({RT: "", "example.com/x": "; alias /etc/shadow"}) == []


@pytest.mark.parametrize("name", ["configuration-snippet", "server-snippet", "auth-snippet", "stream-snippet",
                                  "modsecurity-snippet", "anything-snippet"])
def test_snippet_annotations_are_refused_as_allow_snippet_annotations_false_does(name):
    found = annotations.problems({P + name: "return 200;"})
    assert found == [(P + name, f"{P}{name} annotation cannot be used. Snippet directives are disabled by the "
                                "Ingress administrator")]


@pytest.mark.parametrize("level, refused", [
    (annotations.Risk.CRITICAL, []), (annotations.Risk.HIGH, []),
    (annotations.Risk.MEDIUM, []), (annotations.Risk.LOW, [FSR, RT])])
def test_annotations_above_the_risk_level_are_refused(level, refused):
    anns = {RT: "/", UR: "true", SR: "true", FSR: "true"}
    found = annotations.problems(anns, level)
    assert [k for k, _ in found] == refused
    assert all("is too risky for environment" in m for _, m in found)


def test_the_default_risk_level_is_upstreams():
    assert annotations.RISK_LEVEL == annotations.Risk.HIGH


def test_booleans_read_as_strconv_parsebool():
    ing = Ingress("d", "i", None, (), annotations={UR: "1", SR: "F", FSR: ""})
    assert ing.flag(UR, False) and not ing.flag(SR, True) and not ing.flag(FSR, False)


def _ingress(annotations_: dict[str, str] | None = None, path: str = "/", ptype: str = "Prefix",
             service: str = "web") -> list[str]:
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "evil", "annotations": annotations_ or {}},
            "spec": {"rules": [{"http": {"paths": [
                {"path": path, "pathType": ptype, "backend": {"service": {"name": service,
                                                                          "port": {"number": 80}}}}]}}]}}
    c = Collector()
    parse.parse_ingress(Document("f.yaml", 3, body), c)
    return [str(p) for p in c.problems]


def test_a_refused_annotation_is_one_line_naming_file_ingress_and_annotation():
    lines = _ingress({RT: "/ break; } location /leak { alias /etc/; } location /x { rewrite ^ /"})
    assert len(lines) == 1
    line = lines[0]
    assert "\n" not in line
    assert line.startswith("f.yaml (document 3): Ingress evil: metadata.annotations[" + RT + "]: annotation " + RT
                           + " contains invalid value")


@pytest.mark.parametrize("path, ptype, ok", [
    ("/app", "Prefix", True), ("/a.b-c_d/e", "Exact", True), ("/a b", "Prefix", False), ("/a;b", "Exact", False),
    ("/a$b", "Prefix", False), ('/a"b', "Prefix", False),
    ("/api/(.*)", "ImplementationSpecific", True), ("/x$", "ImplementationSpecific", True),
    ("/x; alias /etc/;", "ImplementationSpecific", False), ("/etc/shadow", "ImplementationSpecific", False),
    ("/x\n", "ImplementationSpecific", False), ("/x_by_lua", "ImplementationSpecific", False),
    ("/var/run/secrets/x", "ImplementationSpecific", False)])
def test_paths_follow_the_admission_webhooks_inspection(path, ptype, ok):
    lines = _ingress(path=path, ptype=ptype)
    assert (lines == []) == ok, lines
    if not ok:
        assert "spec.rules[0].http.paths[0].path" in lines[0]


@pytest.mark.parametrize("service, ok", [("web", True), ("web-2", True), ("2web", False), ("web;x", False),
                                         ('web"', False), ("Web", False), ("w.eb", False)])
def test_backend_service_names_are_dns_1035_labels(service, ok):
    lines = _ingress(service=service)
    assert (lines == []) == ok, lines


# --- quoting and confinement ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ['a";b', "a\\", "x; alias /etc/shadow;", "a}b{c", "a # b", "a\nb", "a'b", "$x"])
def test_a_quoted_value_is_one_token_whatever_it_holds(value):
    st = nginxsafe.statements(f"set $v {nginxsafe.quote(value)};")
    assert st == [nginxsafe.Statement(("set", "$v", value), "main", False)]
    lit = nginxsafe.statements(f"set $v {nginxsafe.literal(value)};")[0].words[2]
    assert "$" not in lit.replace(nginxsafe.LITERAL_DOLLAR, "")


def _upstream(ns: str, backend: Backend) -> nginxconf.Upstream:
    return nginxconf.Upstream(nginxconf.upstream_name(ns, backend), ("10.244.1.2:8080",))


def _rendered(d: str, ing: Ingress) -> str:
    cfg = nginxconf.servers([ing], _upstream, lambda i, h: (None, None))
    return nginxconf.render(cfg, d, nginxconf.Certificate(f"{d}/certs/c.pem", f"{d}/certs/k.pem", ""))


def test_even_an_unvalidated_model_renders_a_confined_configuration(tmp_path):
    """Values the validation refuses, put straight into the model: quoting keeps each inside its directive."""
    evil = "/x break; } location /leak { alias /etc/; } location /y { rewrite ^ /"
    ing = Ingress("default", "evil", None, (Rule("", (Path('/p"; root /;', "ImplementationSpecific",
                                                           Backend('s";root /', 80)),)),),
                  annotations={RT: evil})
    text = _rendered(str(tmp_path), ing)
    nginxsafe.confine(text, str(tmp_path))  # no alias, no root, no path outside tmp_path
    words = [w for st in nginxsafe.statements(text) for w in st.words]
    assert evil in words


def test_the_rendered_configuration_runs_workers_unprivileged(tmp_path):
    text = _rendered(str(tmp_path), Ingress("default", "i", None, (Rule("", (Path("/", "Prefix",
                                                                                 Backend("s", 80)),)),)))
    st = nginxsafe.statements(text)
    assert st[0].words == ("user", "nobody", "nogroup")
    assert ("proxy_max_temp_file_size", "0") in [s.words for s in st]


@pytest.mark.parametrize("inject, words", [
    ("location /leak/ { alias /etc/; }", "directive 'alias'"),
    ("location /leak/ { root /; }", "directive 'root'"),
    ("access_log /tmp/pwned.log;", "access_log '/tmp/pwned.log' is outside"),
    ("access_log {d}/../../pwned.log;", "is outside"),
    ("access_log {d}/link/pwned.log;", "is outside"),  # a symlink out of the directory
    ("error_log stderr;", "is outside"),
    ("include /etc/nginx/mime.types;", "directive 'include'"),
    ("location /s { proxy_pass http://unix:/run/docker.sock; }", "unix socket"),
    ("ssl_certificate_key /etc/ssl/private/x.key;", "is outside"),
    ("client_body_temp_path /tmp/x;", "is outside"),
    ("access_log $host.log;", "is outside"),
])
def test_confine_refuses_what_could_reach_host_files(tmp_path, inject, words):
    d = str(tmp_path)
    os.symlink("/tmp", os.path.join(d, "link"))
    text = _rendered(d, Ingress("default", "i", None, (Rule("", (Path("/", "Prefix", Backend("s", 80)),)),)))
    anchor = "    }\n    ## end server _" if inject.startswith("location") else "    # the status server"
    bad = text.replace(anchor, "    " + inject.replace("{d}", d) + "\n" + anchor, 1)
    assert bad != text
    with pytest.raises(nginxsafe.UnsafeConfig, match=words.replace("(", r"\(")):
        nginxsafe.confine(bad, d)


@pytest.mark.parametrize("text, words", [
    ("user root;", "workers must run as nobody nogroup"),
    ("user nobody nogroup; load_module x.so;", "directive 'load_module'"),
    ('events { } http { map $a $b { include /etc/x; } }', "is not a map entry"),
    ("http { server { listen unix:/tmp/s; } }", "unix socket"),
    ('pid "/tmp/x', "unterminated"),
    ("http {", "unexpected end"),
])
def test_confine_refuses_other_escapes(tmp_path, text, words):
    with pytest.raises(nginxsafe.UnsafeConfig, match=words):
        nginxsafe.confine(text, str(tmp_path))


def test_variables_in_a_word_do_not_open_blocks():
    st = nginxsafe.statements('geo $literal_dollar { default "$"; } set $a ${literal_dollar}x;')
    assert [s.words for s in st] == [("geo", "$literal_dollar"), ("default", "$"), ("set", "$a", "${literal_dollar}x")]
