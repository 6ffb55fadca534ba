"""The pods' own servers: the per-cluster agent (emu.cluster.agent) that answers on every declared containerPort of
every pod, started from agent.json, and the readiness wait that proves each pod answers at its own address.

`endpoints` is the one statement of what the agent serves: `up` writes it, `emu apply` syncs it, and the dry run
prints it (emu.cluster.dryrun)."""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from emu.addons.base import Running
from emu.addons.ingress.documents import SERVED_BY
from emu.apply import kernel, netns, processes, state
from emu.cluster import daemons
from emu.cluster.agent import client as agent
from emu.errors import ClusterError
from emu.model.types import Protocol, Topology
from emu.plan.objects import ClusterPlan

Progress = Callable[[str, int, int], None]


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def endpoints(topo: Topology, plan: ClusterPlan, sctp: bool) -> list[dict[str, Any]]:
    """What the per-cluster server daemon answers: every declared containerPort of every pod, in its namespace
    (not those of pods an addon process serves, like the ingress controller's nginx); SCTP ones only with `sctp`
    (where the kernel has SCTP sockets)."""
    out = []
    for pod in topo.pods:
        pp = plan.pod(pod.key)
        assert pp is not None
        ports = [{"port": p.container_port, "protocol": p.protocol.value} for p in pod.ports
                 if (p.protocol is not Protocol.SCTP or sctp) and SERVED_BY not in pod.annotations]
        out.append({"netns": pp.netns.name, "owner": pod.key, "node": pp.node, "ip": str(pp.ip), "ports": ports})
    return out


def live_endpoints(cl: Running) -> list[dict[str, Any]]:
    return endpoints(cl.topology, cl.plan, kernel.has("sctp"))


def spec_text(name: str, eps: list[dict[str, Any]]) -> str:
    """agent.json."""
    return json.dumps({"cluster": name, "endpoints": eps})


def start_agent(cl: Running) -> None:
    d = cl.record.agent_dir
    os.makedirs(d, exist_ok=True)
    state.write_file(cl.record, "agent/agent.json", spec_text(cl.name, live_endpoints(cl)))
    cl.record.set_pid(daemons.AGENT, agent.start(d))
    cl.record.save()
    agent.AgentClient(d).wait_ready(timeout=60)


def stop_agent(rec: state.Record) -> None:
    for pid in daemons.agent_pids(rec):
        processes.stop(pid, lambda p: daemons.is_our_agent(p, rec.agent_dir))


def _answers_here(ip: str, port: int, proto: Protocol, pod_name: str) -> bool:
    """Inside the pod's namespace: does the server answer at the pod's own address, as that pod?"""
    kind = socket.SOCK_STREAM if proto is Protocol.TCP else socket.SOCK_DGRAM
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            s.settimeout(0.5)
            if proto is Protocol.TCP:
                s.connect((ip, port))
                s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                return data.endswith(pod_name.encode())
            s.sendto(b"hostname", (ip, port))
            return s.recv(4096) == pod_name.encode()
    except OSError:
        return False


def wait_ready(topo: Topology, plan: ClusterPlan, progress: Progress = _quiet, timeout: float = 30.0) -> None:
    """Every pod answers on its first port at its own address, from inside its namespace (this proves the address,
    the interface and the server without filling the shared neighbour table on large topologies)."""
    checks = {}
    for pod in topo.pods:
        if SERVED_BY in pod.annotations:
            continue  # its server (nginx) starts after the pods: the ingress addon waits for it
        port = next((x for x in pod.ports if x.protocol is not Protocol.SCTP), None)
        pp = plan.pod(pod.key)
        if port is not None and pp is not None and (not pp.host_network or pp.netns.name not in checks):
            checks[pp.netns.name] = (str(pp.ip), port.container_port, port.protocol, pod.name, pod.key)
    total, deadline = len(checks), time.monotonic() + timeout
    while checks:
        names = list(checks)
        ok = netns.each(names, lambda n: _answers_here(*checks[n][:4]))
        for n, good in zip(names, ok):
            if good:
                del checks[n]
        progress("ready", total - len(checks), total)
        if checks and time.monotonic() > deadline:
            slow = sorted(v[4] for v in checks.values())
            raise ClusterError(f"{len(slow)} pods do not answer after {timeout:.0f}s: {', '.join(slow[:5])}")
        if checks:
            time.sleep(0.2)
