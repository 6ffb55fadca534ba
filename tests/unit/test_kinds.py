"""The kind registry (emu.model.kinds): one table says how each kind is read from a topology and checked, which
kinds `emu get` and `emu describe` serve, and which objects the addons add; the loader only walks it."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import pytest

from emu.cluster import planner
from emu.errors import ValidationError
from emu.model import kinds, loader, schema
from emu.model.documents import Document
from emu.model.types import ClusterSpec

CLUSTER = "apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec: {nodes: 1}\n"
COREDNS = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: coredns, namespace: kube-system}\ndata: {}\n"
INGRESS = ("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n"
           "  defaultBackend: {service: {name: web, port: {number: 80}}}\n"
           "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n")


def test_every_kind_is_one_entry_and_the_read_ones_have_a_schema():
    assert len(kinds.BY_KIND) == len(kinds.TABLE)
    assert {k.kind for k in kinds.TABLE if k.read} == set(schema.KINDS)


def test_the_served_kinds_keep_the_order_emu_get_lists_them_in():
    assert [k.resource for k in kinds.KINDS] == ["services", "pods", "networkpolicies", "nodes", "ingresses",
                                                 "endpoints", "namespaces", "events"]
    with pytest.raises(kinds.UnknownKind):
        kinds.kind_of("deployments")  # read from a topology, not served


def test_a_kind_without_a_reader_is_not_implemented():
    with pytest.raises(ValidationError) as e:
        planner.load("t.yaml", text=CLUSTER + "---\napiVersion: v1\nkind: Node\nmetadata: {name: n}\n---\n"
                                             "apiVersion: v1\nmetadata: {name: x}\n")
    assert [str(p) for p in e.value.problems] == ["t.yaml (document 2): Node n: kind: kind Node is not implemented",
                                                  "t.yaml (document 3): <no kind> x: kind: missing kind"]


def test_the_addons_documents_come_from_the_sources_given():
    text = CLUSTER + COREDNS + INGRESS
    full = planner.load("t.yaml", text=text)  # the addons' sources (emu.addons.table)
    assert {"kube-system/kube-dns", "ingress-nginx/ingress-nginx-controller"} <= {s.key for s in full.services}
    bare = loader.load("t.yaml", text=text, plugins=dataclasses.replace(planner.PLUGINS, sources=()))
    assert [s.key for s in bare.services] == ["default/web"] and not bare.ingress_classes


def test_each_source_sees_the_documents_before_it():
    seen: list[list[str]] = []

    def source(name: str):
        def add(path: str, docs: Sequence[Document], cluster: ClusterSpec) -> list[Document]:
            seen.append([d.meta["name"] for d in docs])
            return [Document(path, 1000 + len(seen), {"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": name}})]
        return add

    t = loader.load("t.yaml", text=CLUSTER, plugins=dataclasses.replace(planner.PLUGINS,
                                                                         sources=(source("a"), source("b"))))
    assert seen == [[], ["a"]]
    assert [n.name for n in t.namespaces][-2:] == ["a", "b"]
