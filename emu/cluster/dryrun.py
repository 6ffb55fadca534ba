"""`emu up --dry-run FILE`: the whole plan of a cluster as the commands and files `up` would run and write, in the
order `up` does, without root and without touching anything.

First the network part (`network_part`: namespaces, links, addresses, routes, neighbours, FDB,
sysctls, the pod network's rules and, for `plugin: cni`, the plugin calls), then the rest, each section headed by a
comment naming the component and where it runs:

  the pod network's files   flannel's subnet.env on each node
  agent                     agent.json (every pod's servers: emu.cluster.agent) and the agent
  kube-proxy                per node, the proxier mode's first sync (emu.addons.kubeproxy.desired)
  NetworkPolicy             per node, kube-router's sets and filter table (emu.addons.netpol.desired)
  DNS                       resolv.conf files; with the coredns ConfigMap the server (emu.addons.dns.desired)
  Ingress                   nginx.conf and nginx, when an Ingress is served (emu.addons.ingress.desired)

Within a section the objects come in felix's order (emu.plan.content.render).  Paths in the record read
`$EMU_STATE/<cluster>/...`, set from EMU_STATE_DIR by the line that opens the second part.  Values only a running
`up` knows are shown by what stands for them: a pod's agent ports include SCTP ones (`up` leaves them out where the
kernel has no SCTP sockets), with `plugin: cni` pod addresses are the ones emu predicts for host-local (`up` takes
the plugins' results), and each component's module docstring names its own.
"""
from __future__ import annotations

import os

from emu.addons.table import ADDONS
from emu.apply import state
from emu.cluster import planner, workload
from emu.cluster.lifecycle import Cluster, stored
from emu.cluster.agent.client import MODULE as AGENT_MODULE
from emu.cluster.agent.protocol import SPEC_FILE
from emu.network import table as networks
from emu.plan import content, render
from emu.plan.content import Daemon, File, PlanObject, Section


def planned(path: str, name: str | None = None) -> Cluster:
    """Model, IPAM and plan of a topology file, as the cluster `up` would make (its record in memory only: nothing
    is written), with its documents as `up` records them."""
    topo, alloc, plan, docs = planner.plan_documents(path, name)
    rec = state.Record(topo.cluster.name, os.path.abspath(path), documents=[stored(d) for d in docs])
    return Cluster(rec, topo, alloc, plan)


def agent(cl: Cluster) -> tuple[PlanObject, ...]:
    """agent.json and the agent, as emu.cluster.workload starts it."""
    d = content.record_path(cl.name, "agent")
    spec = workload.spec_text(cl.name, workload.endpoints(cl.topology, cl.plan, sctp=True))
    return (File(f"{d}/{SPEC_FILE}", "agent", spec), Daemon("agent", "agent", None,
                                                            ("python3", "-m", AGENT_MODULE, "--dir", d)))


def network_files(cl: Cluster) -> tuple[PlanObject, ...]:
    """The files the pod network keeps for each node in the record (flannel's subnet.env)."""
    return tuple(File(content.record_path(cl.name, "nodes", n.name, path), n.name, text)
                 for n in cl.plan.nodes for path, text in n.files)


def sections(cl: Cluster) -> list[Section]:
    """(heading, objects) for everything after the network part, in the order `up` makes it: the network's files,
    the agent, then each addon's own sections (emu.addons.table)."""
    out: list[Section] = [("the pod network's files of each node", network_files(cl)),
                          ("agent: every pod's servers", agent(cl))]
    for addon in ADDONS:
        out += addon.dry_run(cl)
    return [(h, objs) for h, objs in out if objs]


def network_part(cl: Cluster) -> str:
    """The cluster's own namespaces and infra, then the pod network's part (flannel: each pod's veth and namespace;
    plugin cni: the plugin calls `up` would make)."""
    net = networks.for_cluster(cl.topology.cluster)
    return render.script(cl.plan, net.dry_run(cl.topology, cl.plan))


def script(path: str, name: str | None = None) -> str:
    """The whole dry run: the network part, then every component's section."""
    cl = planned(path, name)
    lines = [network_part(cl).rstrip("\n"), content.EMU_STATE_PREAMBLE]
    for heading, objs in sections(cl):
        lines.append(f"# {heading}")
        lines.extend(content.render(objs))
    return "\n".join(lines) + "\n"
