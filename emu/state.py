"""The cluster record: what emu made for a cluster, written *before* it makes it, so that `down` can remove exactly
that, even after `up` was killed halfway.  Kept under /run/emu (tmpfs, gone on reboot like the namespaces)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ClusterError


def root() -> str:
    return os.environ.get("EMU_STATE_DIR", "/run/emu")


def cluster_dir(name: str) -> str:
    return os.path.join(root(), name)


@dataclass
class Record:
    name: str
    topology_file: str
    status: str = "creating"  # creating | up | failed | deleting
    netns: list[str] = field(default_factory=list)  # every namespace we may have made, recorded before making it
    agent_pid: int | None = None
    # the Cluster document, then every manifest applied since, each {"file", "index", "body"}
    documents: list[dict[str, Any]] = field(default_factory=list)
    allocations: dict[str, Any] = field(default_factory=dict)
    # `emu mark`: per-pod condition overrides, pod key -> {"ready": bool, "terminating": bool}
    pod_conditions: dict[str, dict[str, bool]] = field(default_factory=dict)
    created: float = 0.0
    dns_pid: int | None = None  # the cluster DNS daemon (emu.dns.server)
    etc_files: list[str] = field(default_factory=list)  # /etc/netns/<netns>/{resolv.conf,hosts} files written
    ingress_pid: int | None = None  # the ingress controller's nginx master (emu.ingress.controller)

    @property
    def dir(self) -> str:
        return cluster_dir(self.name)

    @property
    def agent_dir(self) -> str:
        return os.path.join(self.dir, "agent")

    def save(self) -> None:
        """Atomic write: a crash leaves the old record or the new one, never half of one."""
        os.makedirs(self.dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".record.")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self)))  # the C encoder: no indent
        os.replace(tmp, os.path.join(self.dir, "cluster.json"))


def claim(name: str, topology_file: str) -> Record:
    """Create the record directory exclusively: a name is one cluster."""
    os.makedirs(root(), exist_ok=True)
    try:
        os.mkdir(cluster_dir(name))
    except FileExistsError:
        raise ClusterError(f"cluster {name!r} already exists (emu down {name} first, or choose --name)") from None
    rec = Record(name, topology_file)
    rec.save()
    return rec


def load(name: str) -> Record | None:
    path = os.path.join(cluster_dir(name), "cluster.json")
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return Record(name, "")  # unreadable: down still removes the directory
    return Record(**d)


def names() -> list[str]:
    try:
        return sorted(d for d in os.listdir(root()) if os.path.isdir(cluster_dir(d)))
    except FileNotFoundError:
        return []


def forget(name: str) -> None:
    shutil.rmtree(cluster_dir(name), ignore_errors=True)


def write_file(rec: Record, rel: str, text: str) -> str:
    path = os.path.join(rec.dir, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path
