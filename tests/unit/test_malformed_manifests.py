"""Malformed manifests give one clear line per problem, never a traceback: every topology in topologies/ (and the
manifest files `emu apply -f` takes) mutated document by document, loaded through the entries the CLI uses.

Each mapping value is replaced in turn by values of the wrong type (a list, an int, a string, null, a nested mapping,
a bool, a float, a YAML timestamp, ...), each list by a mapping, an int and odd lists, and each key and list item is
deleted; so are the values inside JSON held in a string (a NAD's spec.config, the networks annotation) and inside
the conflist spec.cni.conflist names.  A variant either loads, allocates and plans (emu.cluster.planner.build), or
raises ValidationError whose problems each name the file, the document and a field on one line; any other exception
is a bug.  EXTRA_KINDS holds the kinds and fields emu reads that no topology has.

`emu up --dry-run` reads the file (emu.cluster.planner.load, as planner.plan_documents does) and, for a sample of
the variants that load, makes the whole dry run (emu.cluster.dryrun.script); `emu apply -f` reads the manifest
(emu.cluster.converge._manifests), merges it into the running cluster's documents as apply_file does and validates
the whole set (emu.cluster.lifecycle.topology_from).  The variants are many (about 40,000), so one variant of each
signature (kind, field path with list indices folded, replacement) runs, taken from the smallest file that has it,
and of those a fixed-seed sample; EMU_FUZZ_ALL=1 runs every variant, each that loads through the whole dry run
(about half an hour).
"""
from __future__ import annotations

import copy
import datetime
import functools
import json
import os
import random
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from emu.alloc import ipam
from emu.alloc.ipam import Allocations
from emu.cluster import converge, dryrun, planner
from emu.cluster.lifecycle import stored, topology_from
from emu.errors import EmuError, ValidationError
from emu.model import kinds, loader
from emu.network.cni import config
from emu.network.cni import dryrun as cni_dryrun
from tests.conftest import TOPOLOGIES

EVERY = os.environ.get("EMU_FUZZ_ALL") == "1"
SEED = 14
UP_SAMPLE = 1400  # variants of `emu up --dry-run` per run (of about 4,500 signatures)
DRY_RUN_EVERY = 10  # of those, every tenth makes the whole dry run too when it loads (~25 ms each)
APPLY_SAMPLE = 300  # variants of `emu apply -f`

# Replacements of any value, and more of a list.  The nested mapping has a key YAML reads as an int.
VALUES: tuple[Any, ...] = ([7, "x", {"k": "v"}], 7, "x", None, {"x": {"y": 1}, 7: [None]}, True, -1, "", 1.5,
                           datetime.date(2024, 1, 1))
LIST_VALUES: tuple[Any, ...] = ({"x": 1}, 7, [None], ["x"], [[1]])
DELETE = object()
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# The kinds, and the fields emu reads, that no file in topologies/ holds: mutated like the topologies.
EXTRA_KINDS = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: extra}
spec:
  nodes: [node-1, {name: node-2, mtu: 1500}]
  nodeSettings: {mtu: 1500}
  proxy: {mode: ipvs, masqueradeAll: true}
  iptablesBackend: legacy
  loadBalancerPool: 192.168.240.0/28
---
apiVersion: v1
kind: Namespace
metadata: {name: extra, labels: {team: extra}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: extra
  labels: {app: web}
  annotations: {emu.dev/ready: "false", emu.dev/terminating: "true", kubernetes.io/ingress-bandwidth: 10M}
spec:
  nodeName: node-1
  dnsPolicy: None
  dnsConfig: {nameservers: [10.96.0.10], searches: [extra.svc.cluster.local], options: [{name: ndots, value: "2"}]}
  containers:
  - name: c
    ports: [{name: http, containerPort: 80, hostPort: 8080, hostIP: 0.0.0.0, protocol: TCP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: extra, labels: {app: api}}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}, annotations: {emu.dev/ready: "true"}}
    spec:
      nodeName: node-2
      hostNetwork: false
      dnsPolicy: ClusterFirst
      dnsConfig: {options: [{name: ndots, value: "1"}]}
      containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: extra, labels: {app: web}}
spec:
  type: LoadBalancer
  selector: {app: web}
  externalTrafficPolicy: Local
  healthCheckNodePort: 30999
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  externalIPs: [192.168.50.1]
  loadBalancerIP: 192.168.240.5
  loadBalancerSourceRanges: [0.0.0.0/0]
  publishNotReadyAddresses: true
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, namespace: extra}
subsets:
- addresses: [{ip: 192.168.1.10, nodeName: node-1, hostname: a, targetRef: {kind: Pod, name: web, namespace: extra}}]
  notReadyAddresses: [{ip: 192.168.1.11, nodeName: node-2}]
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: extra}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: extra, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints:
- addresses: [192.168.1.12]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-1
  targetRef: {kind: Pod, name: web, namespace: extra}
ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: extra}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [api]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}}]
    ports: [{protocol: TCP, port: 8000, endPort: 8080}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: UDP, port: 53}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: other
  annotations: {ingressclass.kubernetes.io/is-default-class: "false"}
spec:
  controller: example.com/other
  parameters: {apiGroup: example.com, kind: Params, name: p, scope: Namespace, namespace: extra}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: extra
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /, nginx.ingress.kubernetes.io/ssl-redirect: "false"}
spec:
  ingressClassName: nginx
  defaultBackend: {service: {name: web, port: {name: http}}}
  tls: [{hosts: [web.example.com], secretName: web-tls}]
  rules:
  - host: web.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: v1
kind: Secret
metadata: {name: web-tls, namespace: extra, annotations: {emu.dev/self-signed: "true"}}
type: kubernetes.io/tls
---
apiVersion: v1
kind: Secret
metadata: {name: opaque, namespace: extra}
type: Opaque
data: {tls.crt: aGVsbG8=}
stringData: {tls.key: hello}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: extra}
data: {a.conf: "x"}
binaryData: {b.bin: aGVsbG8=}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: static, namespace: extra}
spec:
  config: '{"cniVersion": "0.3.1", "name": "static", "type": "macvlan", "master": "eth0", "mode": "bridge",
    "mtu": 1500, "capabilities": {"ips": true}, "ipam": {"type": "static",
    "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}], "routes": [{"dst": "0.0.0.0/0"}]}}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: ranged, namespace: extra}
spec:
  config: '{"cniVersion": "0.3.1", "type": "macvlan", "ipam": {"type": "host-local", "subnet": "10.20.0.0/24",
    "rangeStart": "10.20.0.10", "rangeEnd": "10.20.0.20", "gateway": "10.20.0.1",
    "routes": [{"dst": "10.30.0.0/16", "gw": "10.20.0.1"}]}}'
---
apiVersion: v1
kind: Pod
metadata:
  name: attached
  namespace: extra
  annotations:
    k8s.v1.cni.cncf.io/networks: '[{"name": "static", "interface": "net1", "ips": ["10.10.0.5/24"],
      "mac": "c2:b0:57:49:47:02"}, {"name": "ranged", "namespace": "extra"}]'
spec: {containers: [{name: c}]}
"""
EXTRA_FILE = "extra-kinds.yaml"  # its name in the variants (nothing in it refers to another file)
APPLY_FILES = {"netpol/deny-x-to-a.yaml": "netpol-model.yaml"}  # manifest -> the topology it is applied to


@dataclass(frozen=True)
class Variant:
    file: str  # the topology (or manifest) it mutates, relative to topologies/
    document: int  # 0-based among the file's documents
    path: tuple[Any, ...]  # keys and list indices to the value
    value: Any  # the replacement, or DELETE

    def __str__(self) -> str:
        what = "deleted" if self.value is DELETE else f"= {self.value!r}"
        return f"{self.file} document {self.document + 1}: {'.'.join(map(str, self.path))} {what}"


@functools.cache
def _read(name: str) -> tuple[Any, ...]:
    text = EXTRA_KINDS if name == EXTRA_FILE else (TOPOLOGIES / name).read_text()
    return tuple(yaml.load_all(text, Loader=LOADER))


def _bodies(name: str) -> list[Any]:
    """The file's documents (shared: copy before changing one)."""
    return list(_read(name))


class _Inside:
    """A step of a variant's path into a string: the JSON it holds, or the conflist file it names."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


JSON = _Inside("(json)")  # a string holding a JSON object or list (a NAD's spec.config, the networks annotation)
FILE = _Inside("(file)")  # the conflist spec.cni.conflist names, its templates filled in with sample values


@functools.cache
def _conflist(rel: str) -> Any:
    return json.loads(config.render((TOPOLOGIES / rel).read_text(), config.sample_values()))


def _json(x: Any) -> Any:
    """The JSON object or list the string x holds, or None."""
    if isinstance(x, str) and x.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(x)
        except ValueError:
            return None
    return None


def _walk(v: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        yield path + (k,), x
        yield from _walk(x, path + (k,))
        if _json(x) is not None:
            yield from _walk(_json(x), path + (k, JSON))
        if path + (k,) == ("spec", "cni", "conflist") and isinstance(x, str):
            yield from _walk(_conflist(x), path + (k, FILE))


def variants(name: str, first: int = 0) -> Iterator[Variant]:
    """The variants of the file's documents from `first` on."""
    for i, body in enumerate(_bodies(name)):
        if i < first or not isinstance(body, dict):
            continue
        for path, v in _walk(body):
            for r in VALUES + (LIST_VALUES if isinstance(v, list) else ()):
                if r != v:
                    yield Variant(name, i, path, r)
            yield Variant(name, i, path, DELETE)


def _changed(node: Any, path: tuple[Any, ...], value: Any, tmp: Path | None) -> Any:
    """A copy of node (a mapping or list) with the value at path replaced (or deleted); the rest is shared."""
    node = copy.copy(node)
    k, rest = path[0], path[1:]
    if not rest:
        if value is DELETE:
            del node[k]
        else:
            node[k] = copy.deepcopy(value)
    elif rest[0] is JSON:
        node[k] = json.dumps(_changed(_json(node[k]), rest[1:], value, tmp), default=str)
    elif rest[0] is FILE:
        assert tmp is not None, "a conflist variant needs a directory to write the conflist to"
        conflist = tmp / "fuzz.conflist"
        conflist.write_text(json.dumps(_changed(_conflist(node[k]), rest[1:], value, tmp), default=str))
        node[k] = str(conflist)
    else:
        node[k] = _changed(node[k], rest, value, tmp)
    return node


def mutated(v: Variant, first: int = 0, tmp: Path | None = None) -> str:
    """The file's text with the variant's change, from its document `first` on (a changed conflist is written to
    `tmp`)."""
    bodies = _bodies(v.file)
    bodies[v.document] = _changed(bodies[v.document], v.path, v.value, tmp)
    return yaml.dump_all(bodies[first:], Dumper=DUMPER, sort_keys=False)


def signature(v: Variant) -> tuple[Any, ...]:
    body = _bodies(v.file)[v.document]
    return (body.get("kind"), tuple("[]" if isinstance(k, int) else k for k in v.path),
            "<delete>" if v.value is DELETE else repr(v.value))


def pick(files: dict[str, int], size: int) -> list[Variant]:
    """Every variant of `files` (name -> first document mutated; EMU_FUZZ_ALL=1), else one per signature, from the
    smallest file that has it, and of those `size` drawn with a fixed seed."""
    if EVERY:
        return [v for f, i in files.items() for v in variants(f, i)]
    by_cost = sorted(files, key=lambda f: len(EXTRA_KINDS) if f == EXTRA_FILE else (TOPOLOGIES / f).stat().st_size)
    first: dict[tuple[Any, ...], Variant] = {}
    for f in by_cost:
        for v in variants(f, files[f]):
            first.setdefault(signature(v), v)
    chosen = list(first.values())
    return random.Random(SEED).sample(chosen, min(size, len(chosen)))


def problem_lines(e: ValidationError, files: tuple[str, ...]) -> list[str]:
    """What is wrong with the problems of a ValidationError: each must name one of `files`, a document and a field,
    on one line."""
    bad = []
    for p in e.problems:
        if p.file not in files or p.document is None or not p.field or "\n" in str(p):
            bad.append(f"problem without a file, document or field, or on several lines: {p}")
    return bad


def check(v: Variant, run: Any, files: tuple[str, ...]) -> list[str]:
    try:
        run()
    except ValidationError as e:
        return [f"{v}: {line}" for line in problem_lines(e, files)]
    except Exception as e:  # noqa: BLE001 (the bug this test is here to find)
        frame = traceback.extract_tb(e.__traceback__)[-1]
        return [f"{v}: {type(e).__name__}: {e} ({frame.filename}:{frame.lineno})"]
    return []


def plan(path: str, text: str, dry_run: Path | None = None) -> None:
    """What `emu up --dry-run` does with the file: model, IPAM, plan; with `dry_run` (a directory to write the file
    to) then the whole dry run, every component's section (emu.cluster.dryrun.script), where a user error is one
    line too."""
    topo = planner.load(path, text=text)
    planner.build(topo, ipam.allocate(topo, Allocations.empty()))
    if dry_run is None:
        return
    f = dry_run / Path(path).name
    f.write_text(text)
    try:
        dryrun.script(str(f))
    except ValidationError:
        raise
    except EmuError as e:
        assert "\n" not in str(e), f"an error of several lines: {e}"


def apply(base: str, manifest: Path) -> None:
    """What `emu apply -f` does before it touches anything: read the manifest, merge it into the cluster's documents
    (converge.apply_file), validate the whole set, allocate and plan (converge._converge)."""
    docs = loader.read_documents(base)
    rec = SimpleNamespace(name="fuzz", topology_file=base, pod_conditions={}, documents=[stored(d) for d in docs])
    before = topology_from(rec, rec.documents)
    new = {converge._ident(d.body): stored(d) for d in converge._manifests(str(manifest))}
    merged = [new.pop(converge._ident(d["body"]), d) for d in rec.documents]
    topo = topology_from(rec, merged + list(new.values()))
    planner.build(topo, ipam.allocate(topo, ipam.allocate(before, Allocations.empty())))


def _report(failures: list[str], ran: int) -> str:
    return f"{len(failures)} of {ran} variants fail:\n" + "\n".join(failures[:40])


def test_every_kind_a_topology_may_hold_is_mutated():
    held = {b.get("kind") for f in [*(p.name for p in TOPOLOGIES.glob("*.yaml")), *APPLY_FILES, EXTRA_FILE]
            for b in _bodies(f) if isinstance(b, dict)}
    readable = {k.kind for k in kinds.TABLE if k.read is not None}
    assert readable <= held, f"no file mutates {sorted(readable - held)}: add one to EXTRA_KINDS"


def test_the_unmutated_files_load_and_plan():
    for f in [*(p.name for p in sorted(TOPOLOGIES.glob("*.yaml"))), EXTRA_FILE]:
        path = str(TOPOLOGIES / f)
        plan(path, yaml.dump_all(_bodies(f), Dumper=DUMPER, sort_keys=False))


def test_malformed_topologies_give_problems_not_tracebacks(tmp_path, monkeypatch):
    """`emu up --dry-run FILE`: every variant loads and plans, or is refused with problems that name where; every
    DRY_RUN_EVERY-th one that loads also makes the whole dry run."""
    monkeypatch.setenv("EMU_STATE_DIR", str(tmp_path / "state"))  # the dry run reads it; nothing is written
    monkeypatch.setattr(cni_dryrun, "find_plugin", lambda ptype, bin_dirs: os.path.join(bin_dirs[0], ptype))
    dry = tmp_path / "dry"
    dry.mkdir()
    (dry / "cni").symlink_to(TOPOLOGIES / "cni")  # the conflists the topologies name, relative to the file
    files = {**{p.name: 0 for p in sorted(TOPOLOGIES.glob("*.yaml"))}, EXTRA_FILE: 0}
    chosen = pick(files, UP_SAMPLE)
    failures = []
    for i, v in enumerate(chosen):
        path = str(TOPOLOGIES / v.file)
        whole = dry if EVERY or i % DRY_RUN_EVERY == 0 else None
        failures += check(v, lambda: plan(path, mutated(v, tmp=tmp_path), whole), (path, str(dry / v.file)))
    assert not failures, _report(failures, len(chosen))
    assert not (tmp_path / "state").exists()


def test_malformed_apply_manifests_give_problems_not_tracebacks(tmp_path):
    """`emu apply -f FILE` on a cluster of the topology it belongs to: the manifests of APPLY_FILES, and every
    topology's own manifests applied to it again."""
    pairs = {**APPLY_FILES, **{p.name: p.name for p in sorted(TOPOLOGIES.glob("*.yaml"))}}
    first = {f: int(f == base) for f, base in pairs.items()}  # a topology's own manifests: all after its Cluster
    chosen = pick(first, APPLY_SAMPLE)
    failures = []
    for v in chosen:
        base = str(TOPOLOGIES / pairs[v.file])
        manifest = tmp_path / "apply.yaml"
        manifest.write_text(mutated(v, first[v.file], tmp_path))
        failures += check(v, lambda: apply(base, manifest), (base, str(manifest)))
    assert not failures, _report(failures, len(chosen))


BAD = """\
apiVersion: emu.dev/v1alpha1
kind: Cluster
metadata: {name: bad}
spec: {nodes: 2}
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: c, ports: 1}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}], externalIPs: 7}
"""


@pytest.mark.parametrize("text, lines", [
    (BAD, ["(document 2): Pod web: spec.containers[0].ports: must be a list",
           "(document 3): Service web: spec.externalIPs: must be a list of IPv4 addresses"]),
    (BAD.replace("metadata: {name: web}\nspec:\n  containers", "metadata: 7\nspec:\n  containers")
        .replace("{name: web}\nspec: {ports", "{name: web, namespace: [x]}\nspec: {ports"),
     ["(document 2): Pod <unnamed>: metadata: must be a mapping",
      "(document 3): Service web: metadata.namespace: must be a string, got ['x']"]),
])
def test_cli_dry_run_prints_each_problem_on_its_own_line_and_exits_2(tmp_path, text, lines):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "emu", "up", "--dry-run", str(f)], capture_output=True, text=True,
                       env={**os.environ, "EMU_STATE_DIR": str(tmp_path / "state")})
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    got = r.stderr.splitlines()
    assert got[0].startswith("error: ") and len(got) == len(lines), got
    assert all(g.endswith(f"{f} {want}") for g, want in zip(got, lines)), got
    assert not (tmp_path / "state").exists()  # nothing half-built
