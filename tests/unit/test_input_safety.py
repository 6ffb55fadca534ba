"""Hostile and careless input files: every one is one ValidationError line naming the file (and document, object,
field), never a hang, a memory blow-up or a traceback; and what validation must catch before `emu up` builds."""
from __future__ import annotations

import os
import threading

import pytest

from emu.cluster import planner
from emu.model import kinds, pods as model_pods, schema, loader as topology
from emu.errors import ValidationError
from tests.conftest import TOPOLOGIES

HEAD = "apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec: {nodes: 1}\n"
POD = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  containers: [{name: c, image: x}]\n"


def problems(text: str, path: str = "t.yaml") -> list[str]:
    with pytest.raises(ValidationError) as e:
        planner.load(path, text=text)
    return [str(p) for p in e.value.problems]


def problems_of_file(path: str) -> list[str]:
    with pytest.raises(ValidationError) as e:
        planner.load(path)
    return [str(p) for p in e.value.problems]


# --- the file itself ------------------------------------------------------------------------------------------------


def test_alias_bomb_is_refused_as_goyaml_refuses_it():
    # nine levels of ten aliases: 10**9 nodes once expanded; goyaml says "document contains excessive aliasing"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = HEAD + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" + \
        "\n".join("  " + x for x in lines) + "\n"
    (msg,) = problems(text)
    assert msg.startswith("t.yaml (document 2): ConfigMap bomb: document contains excessive aliasing"), msg


def test_a_few_aliases_are_still_fine():
    text = HEAD + ("---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 2\n"
                   "  selector: {matchLabels: &l {app: d}}\n  template:\n    metadata: {labels: *l}\n"
                   "    spec: {containers: [{name: c, image: x}]}\n")
    assert [p.labels["app"] for p in planner.load("t.yaml", text=text).pods] == ["d", "d"]


@pytest.mark.parametrize("where, text, field", [
    ("top level", HEAD + "---\napiVersion: v1\nkind: Pod\nkind: Service\nmetadata: {name: a}\n", "kind"),
    ("nested", HEAD + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, name: b}\n", "metadata.name"),
])
def test_duplicate_keys_are_an_error(where, text, field):
    (msg,) = problems(text)
    assert msg.startswith(f"t.yaml (document 2): Pod ") and f": {field}: line " in msg, msg
    assert f'duplicate field "{field.rsplit(".", 1)[-1]}"' in msg


def test_merge_keys_may_be_overridden():
    text = HEAD + ("---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"
                   "spec:\n  containers:\n  - &c {name: c, image: x}\n  - {<<: *c, name: d}\n")
    assert planner.load("t.yaml", text=text).pods[0].name == "a"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "t.yaml"
    os.mkfifo(fifo)
    got: list[list[str]] = []
    t = threading.Thread(target=lambda: got.append(problems_of_file(str(fifo))), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO with no writer hung")
    assert got == [[f"{fifo}: cannot read: a FIFO, not a regular file"]]


@pytest.mark.parametrize("path, what", [("/dev/zero", "a device"), ("/", "a directory")])
def test_devices_and_directories_are_refused(path, what):
    assert problems_of_file(path) == [f"{path}: cannot read: {what}, not a regular file"]


def test_a_file_over_the_limit_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)  # sparse: no disk, no memory
    (msg,) = problems_of_file(str(big))
    assert msg.startswith(f"{big}: cannot read: 16777217 bytes, more than the 16777216-byte limit")


def test_non_utf8_is_one_line(tmp_path):
    f = tmp_path / "latin1.yaml"
    f.write_bytes(HEAD.encode() + b"# caf\xe9\n")
    assert problems_of_file(str(f)) == [f"{f}: line 5: not UTF-8 text (byte 0xe9 at offset {len(HEAD) + 5})"]


def test_nul_and_deep_nesting_are_invalid_yaml_not_tracebacks():
    assert problems(HEAD + "x: \0\n")[0].startswith("t.yaml: line 5: invalid YAML")
    assert "invalid YAML" in problems(HEAD + "---\n" + "[" * 5000 + "]" * 5000 + "\n")[0]


# --- strict field validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, body, field", [
    ("Pod", "metadata: {name: a}\nspec: {bogusField: 1, containers: [{name: c, image: x}]}", "spec.bogusField"),
    ("Pod", "metadata: {name: a}\nspec: {containers: [{name: c, image: x, prots: []}]}", "spec.containers[0].prots"),
    ("Pod", "metadata: {name: a, lables: {a: b}}\nspec: {containers: [{name: c}]}", "metadata.lables"),
    ("Service", "metadata: {name: s}\nspec: {ports: [{port: 80, tragetPort: 8080}]}", "spec.ports[0].tragetPort"),
    ("Namespace", "metadata: {name: n}\nspec: {finalisers: []}", "spec.finalisers"),
    ("ConfigMap", "metadata: {name: m}\ndat: {}", "dat"),
])
def test_unknown_fields_are_errors_as_kubectl_words_them(kind, body, field):
    got = problems(HEAD + f"---\napiVersion: v1\nkind: {kind}\n{body}\n")
    assert any(p.endswith(f': {field}: unknown field "{field}"') for p in got), got


def test_unknown_fields_of_the_cluster_and_of_a_deployment_template():
    got = problems(HEAD.replace("spec: {nodes: 1}", "spec: {nodes: 1, nodez: 2}") +
                   "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 1\n"
                   "  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n"
                   "    spec: {containers: [{name: c, image: x, resources: {limit: {}}}]}\n")
    assert got == ['t.yaml (document 1): Cluster t: spec.nodez: unknown field "spec.nodez"']


def test_status_and_fields_emu_ignores_are_accepted():
    text = HEAD + ("---\napiVersion: v1\nkind: Pod\nmetadata: {name: a, uid: x, resourceVersion: '1'}\n"
                   "spec:\n  serviceAccountName: sa\n  tolerations: [{key: k, operator: Exists}]\n"
                   "  containers: [{name: c, image: x, resources: {limits: {cpu: 1}}, livenessProbe: "
                   "{httpGet: {path: /, port: 80}, periodSeconds: 5}}]\nstatus: {phase: Running}\n")
    assert planner.load("t.yaml", text=text).pods[0].name == "a"


def test_every_topology_still_loads():
    for path in sorted(TOPOLOGIES.rglob("*.yaml")):
        text = path.read_text()
        if "kind: Cluster" in text.split("---", 1)[0]:
            planner.load(str(path))


def test_every_kind_topology_reads_has_a_schema():
    read = {k.kind for k in kinds.TABLE if k.read is not None}
    assert read == {"Namespace", "Pod", "Deployment", "Service", "EndpointSlice", "Endpoints", "NetworkPolicy",
                    "NetworkAttachmentDefinition", "ConfigMap", "Cluster", "Ingress", "IngressClass", "Secret"}
    assert read == set(schema.KINDS)


# --- names and sysctls that would fail during `up` ------------------------------------------------------------------


def test_a_253_character_pod_name_is_refused_for_its_netns_name():
    name = "a" * 253
    (msg,) = problems(HEAD + POD % name)
    assert msg.startswith(f"t.yaml (document 2): Pod {name}: metadata.name: pod default/{name} needs the network "
                          f"namespace t.default.") and "at most 255 bytes" in msg


def test_a_pod_name_that_just_fits_is_accepted():
    name = "a" * (255 - len("t.default."))
    assert planner.load("t.yaml", text=HEAD + POD % name).pods[0].name == name


@pytest.mark.parametrize("labels, field", [
    ("{'a b': x}", "metadata.labels[a b]"),
    ("{a: 'x y'}", "metadata.labels[a]"),
    ("{a: " + "x" * 64 + "}", "metadata.labels[a]"),
    ("{'-bad/a': x}", "metadata.labels[-bad/a]"),
])
def test_label_keys_and_values_follow_the_api_server(labels, field):
    text = HEAD + f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a, labels: {labels}}}\n" \
                  "spec: {containers: [{name: c}]}\n"
    assert any(f": {field}: " in p for p in problems(text))


@pytest.mark.parametrize("key, words", [
    ("net.ipv4.no_such_sysctl", "not a sysctl of this kernel"),
    ("net.netfilter.nf_conntrack_max", "read-only in a node's network namespace"),
    ("net.ipv4.conf.eth7.rp_filter", "does not exist yet"),
    ("net.ipv4.tcp_mem", "machine-wide"),
])
def test_sysctls_a_node_namespace_cannot_take_are_refused(key, words):
    (msg,) = problems(HEAD.replace("spec: {nodes: 1}", f"spec: {{nodeSettings: {{sysctls: {{{key}: '1'}}}}}}"))
    assert f": spec.nodeSettings.sysctls[{key}]: " in msg and words in msg, msg


def test_names_with_a_trailing_newline_are_refused():
    # a `$` in a regular expression matches before a final newline: "web\n" passed as a DNS label
    got = problems(HEAD + '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: "web\\n"}\n')
    assert any("metadata.name: namespace name 'web\\n' must be a DNS label" in p for p in got), got


# --- generated names ------------------------------------------------------------------------------------------------


def test_100000_replicas_get_100000_distinct_names():
    text = HEAD + ("---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 100000\n"
                   "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
                   "    spec: {containers: [{name: c, image: x}]}\n")
    doc = topology.read_documents("t.yaml", text)[1]
    c = topology.Collector()
    pods = model_pods.expand_deployment(doc, c)
    assert not c.problems and len(pods) == 100000
    assert len({p.name for p in pods}) == 100000
    rs = pods[0].name.rsplit("-", 1)[0]  # attempt 0 keeps the names emu always gave
    assert pods[0].name == f"{rs}-{model_pods.random_suffix('default', rs, 0)}"


def test_generated_names_are_cut_to_63_characters_as_generateName_does():
    name = "d" * 100
    text = HEAD + (f"---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n"
                   "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
                   "    spec: {containers: [{name: c, image: x}]}\n")
    pods = planner.load("t.yaml", text=text).pods
    assert [len(p.name) for p in pods] == [63, 63] and pods[0].name.startswith("d" * 58)


def test_a_plugin_cni_field_under_plugin_flannel_is_named_not_unknown():
    got = problems(HEAD.replace("spec: {nodes: 1}", "spec: {cni: {plugin: flannel, conflist: x.conflist}}"))
    assert got == ["t.yaml (document 1): Cluster t: spec.cni.conflist: only valid with plugin cni "
                   "(plugin flannel takes backend)"]


def test_emu_apply_refuses_unknown_fields_as_up_does():
    """A manifest applied to a running cluster is held to the same strict fields as one read by `emu up`."""
    from emu.apply import state
    from emu.cluster import lifecycle
    cluster = {"apiVersion": "emu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "c"}, "spec": {"nodes": 1}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c"}], "bogusField": 1}}
    stored = [{"file": "t.yaml", "index": 1, "body": cluster}, {"file": "x.yaml", "index": 1, "body": pod}]
    with pytest.raises(ValidationError) as e:
        lifecycle.topology_from(state.Record("c", "t.yaml"), stored)
    assert 'spec.bogusField: unknown field "spec.bogusField"' in str(e.value)
