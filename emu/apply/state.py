"""The cluster record: what emu made for a cluster, written *before* it makes it, so that `down` can remove exactly
that, even after `up` was killed halfway.  Kept under /run/emu (tmpfs, gone on reboot like the namespaces)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from emu.model import names as naming
from emu.errors import ClusterError, InvalidName

RECORD_FILE = "cluster.json"
LOCK_FILE = "lock"  # flock(2)ed by every command that changes the cluster; holds "<pid> <command>" of the holder
LOCK_NOTICE = 1.0  # seconds a command waits for the lock before it says so


def root() -> str:
    return os.environ.get("EMU_STATE_DIR", "/run/emu")


def cluster_dir(name: str) -> str:
    """The cluster's directory.  Every path emu builds from a cluster name goes through here, so a name that is not
    a cluster name (`../../tmp/x`, `/tmp/x`) is refused before any path exists."""
    bad = naming.cluster_name_error(name)
    if bad:
        raise InvalidName(bad)
    return os.path.join(root(), name)


def inside(path: str, base: str) -> bool:
    """Does `path`, with every symlink resolved, lie strictly below `base` (also resolved)?"""
    real, top = os.path.realpath(path), os.path.realpath(base)
    return real != top and real.startswith(top.rstrip(os.sep) + os.sep)


def confined(path: str, base: str) -> str:
    """`path` if it resolves inside `base`; a ClusterError otherwise (what emu deletes or writes for a cluster
    never lands outside its own directory, whatever a name or a planted symlink says)."""
    if not inside(path, base):
        raise ClusterError(f"refusing {path}: it resolves to {os.path.realpath(path)}, outside {base}")
    return path


@dataclass
class Record:
    name: str
    topology_file: str
    status: str = "creating"  # creating | up | failed | deleting
    netns: list[str] = field(default_factory=list)  # every namespace we may have made, recorded before making it
    # the Cluster document, then every manifest applied since, each {"file", "index", "body"}
    documents: list[dict[str, Any]] = field(default_factory=list)
    allocations: dict[str, Any] = field(default_factory=dict)
    # `emu mark`: per-pod condition overrides, pod key -> {"ready": bool, "terminating": bool}
    pod_conditions: dict[str, dict[str, bool]] = field(default_factory=dict)
    created: float = 0.0
    # One entry per component (the agent, each addon by its name): what of it the record owns, named before it
    # exists: {"pid": the daemon's pid, "files": files it wrote outside the record's directory (/etc/netns/...)}.
    components: dict[str, dict[str, Any]] = field(default_factory=dict)

    def pid(self, component: str) -> int | None:
        pid = self.components.get(component, {}).get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None

    def set_pid(self, component: str, pid: int | None) -> None:
        entry = self.components.setdefault(component, {})
        if pid is None:
            entry.pop("pid", None)
        else:
            entry["pid"] = pid

    def files(self, component: str) -> list[str]:
        return [f for f in self.components.get(component, {}).get("files", []) if isinstance(f, str)]

    def set_files(self, component: str, paths: list[str]) -> None:
        self.components.setdefault(component, {})["files"] = sorted(set(paths))

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
        os.replace(tmp, os.path.join(self.dir, RECORD_FILE))


def claim(name: str, topology_file: str, command: str = "emu up") -> tuple[Record, "Lock"]:
    """Create the record directory exclusively (a name is one cluster) and lock it before the record exists, so that
    no other command can act on a cluster that is still being built."""
    os.makedirs(root(), exist_ok=True)
    try:
        os.mkdir(cluster_dir(name), 0o755)
    except FileExistsError:
        raise ClusterError(f"cluster {name!r} already exists (emu down {name} first, or choose --name)") from None
    lock = Lock.take(name, command)
    rec = Record(name, topology_file)
    rec.save()
    return rec, lock


def _no_cluster(name: str) -> ClusterError:
    return ClusterError(f"cluster {name!r} not found (emu status lists clusters)")


class Lock:
    """The per-cluster lock: an flock(2) on `<cluster dir>/lock`, held from the moment a changing command reads the
    record until it has written its last change.  `emu down` removes the file with the directory while holding it;
    a command that waited then finds the file gone and says the cluster was removed, instead of acting on a record
    that no longer exists (or on a new cluster of the same name, whose lock is another file)."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    @classmethod
    def take(cls, name: str, command: str, on_wait: Callable[[str], None] | None = None) -> "Lock":
        d = cluster_dir(name)
        if os.path.islink(d):  # never follow a link planted in the state directory, not even to make a lock file
            raise ClusterError(f"refusing {d}: a symlink, not a cluster directory")
        path = os.path.join(d, LOCK_FILE)
        notice = time.monotonic() + LOCK_NOTICE
        told = False
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except FileNotFoundError:
                raise _no_cluster(name) from None
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not told and time.monotonic() >= notice:
                            told = True
                            (on_wait or _say)(f"waiting for cluster {name!r}: {_holder(fd)} is changing it")
                        time.sleep(0.05)
                try:
                    same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    raise ClusterError(f"cluster {name!r} was removed (emu down) while {command} waited for it") \
                        from None
                if not same:  # removed and made anew while we waited: lock the new cluster's file
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
                return cls(fd)
            except BaseException:
                os.close(fd)
                raise

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it: `pid 1234 (emu apply)`."""
    try:
        pid, _, cmd = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        return "another command"
    return f"pid {pid} ({cmd})" if pid.isdigit() else "another command"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def locked(name: str, command: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the cluster's lock for the block (see Lock); read the record only inside it."""
    lock = Lock.take(name, command, on_wait)
    try:
        yield
    finally:
        lock.release()


def load(name: str) -> Record | None:
    path = os.path.join(cluster_dir(name), RECORD_FILE)
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return Record(name, "")  # unreadable: down still removes the directory
    try:
        return Record(**_upgraded(d))
    except TypeError:  # not a record of this version's shape
        return Record(name, "")


# A record written before components had one entry each: its fields, and the entry each now lives in.
_OLD_PIDS = {"agent_pid": "agent", "dns_pid": "dns", "ingress_pid": "ingress-nginx"}


def _upgraded(d: dict[str, Any]) -> dict[str, Any]:
    """A record of an older emu in today's shape, so that `down` still removes all it names (a cluster made before
    an upgrade is not orphaned by it): per-daemon pid fields and `etc_files` become component entries."""
    if not isinstance(d, dict) or not any(k in d for k in (*_OLD_PIDS, "etc_files")):
        return d
    d = dict(d)
    comps: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (d.get("components") or {}).items()}
    for old, comp in _OLD_PIDS.items():
        pid = d.pop(old, None)
        if isinstance(pid, int) and pid > 0:
            comps.setdefault(comp, {})["pid"] = pid
    for path in d.pop("etc_files", None) or []:
        comp = "dns" if str(path).endswith("/resolv.conf") else "ingress-nginx"  # the external host's /etc/hosts
        comps.setdefault(comp, {}).setdefault("files", []).append(path)
    d["components"] = comps
    return d


def names() -> list[str]:
    """Clusters: the directories of the state directory that carry emu's record (nothing else that lives there)."""
    try:
        entries = os.listdir(root())
    except FileNotFoundError:
        return []
    return sorted(d for d in entries if naming.cluster_name_error(d) is None and not os.path.islink(
        os.path.join(root(), d)) and os.path.isfile(os.path.join(root(), d, RECORD_FILE)))


def exists(name: str) -> bool:
    """Is there anything (a record, or a directory a killed `up` left before its record) under this name?"""
    return os.path.lexists(cluster_dir(name))


def forget(name: str) -> None:
    """Remove the cluster's directory; only ever a real directory directly below the state directory (a symlink
    planted there is unlinked, never followed)."""
    d = cluster_dir(name)
    if os.path.islink(d):
        os.unlink(d)
        return
    if not os.path.isdir(d):
        return
    confined(d, root())
    shutil.rmtree(d, ignore_errors=True)  # rmtree itself never follows a symlink inside the tree


def write_file(rec: Record, rel: str, text: str) -> str:
    path = os.path.join(rec.dir, rel)
    os.makedirs(os.path.dirname(confined(path, rec.dir)), exist_ok=True)
    confined(path, rec.dir)  # again, now that the directories exist: none of them may be a planted symlink
    with open(path, "w") as f:
        f.write(text)
    return path
