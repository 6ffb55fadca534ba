"""nginx, the ingress controller's process: its directory in the record, the one writer of its nginx.conf (confined,
then `nginx -t`), starting it inside the controller pod's namespace, reloading it (SIGHUP, as ingress-nginx reloads:
the new configuration's checksum served, the old workers retired), finding it (pid files checked against the command
line) and stopping it.

Files live in <record>/ingress (mode 0700, root's): nginx.conf, certs/, access.log and error.log, nginx.pid (written
by nginx itself: its `pid` directive), master.pid (written when it is spawned) and netns (where its processes live).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request

from emu.addons.ingress import nginxconf, nginxsafe
from emu.apply import netns, processes, state
from emu.errors import ClusterError

COMPONENT = "ingress-nginx"  # its entry in the record (emu.addons.ingress.hooks)
START_TIMEOUT = 20.0
RELOAD_TIMEOUT = 10.0


def directory(rec: state.Record) -> str:
    """<record>/ingress: the controller's files."""
    return os.path.join(rec.dir, "ingress")


def write_file(path: str, text: str, mode: int) -> None:
    """Replace `path` with `text` at once (a temporary file renamed over it), created with `mode`."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_file(path: str) -> str | None:
    """The file's text, or None if it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _is_ours(pid: int, conf: str) -> bool:
    argv = processes.cmdline(pid)
    if argv is None:
        return False
    # nginx retitles its master "nginx: master process nginx -p ... -c CONF ...": one string with spaces
    text = " ".join(argv)
    return text.startswith("nginx") and f"-c {conf}" in text


def pids(rec: state.Record) -> set[int]:
    """The live nginx masters of this cluster: the recorded pid and the pid files, each only while its command line
    is nginx with this cluster's nginx.conf (pids get recycled)."""
    d = directory(rec)
    conf = os.path.join(d, "nginx.conf")
    found = {rec.pid(COMPONENT)} - {None}
    for f in ("master.pid", "nginx.pid"):
        try:
            found.add(int((read_file(os.path.join(d, f)) or "").strip()))
        except ValueError:
            pass
    return {p for p in found if _is_ours(p, conf)}


def _log_tail(d: str) -> str:
    text = read_file(os.path.join(d, "error.log")) or read_file(os.path.join(d, "nginx.out")) or "(no error.log)"
    return " | ".join(text.strip().splitlines()[-4:])


def _test(conf: str, d: str) -> None:
    r = subprocess.run(["nginx", "-t", "-q", "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ClusterError(f"nginx rejected the ingress configuration {conf}: "
                           f"{' | '.join(r.stderr.strip().splitlines()[-3:])}")


def _status(ns: str, path: str, port: int = nginxconf.STATUS_PORT) -> str | None:
    def get() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                return str(r.read().decode())
        except OSError:
            return None
    return netns.run_in(ns, get)


def wait_checksum(ns: str, want: str, d: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until nginx in `ns` serves the configuration with checksum `want` (its status page); ClusterError with
    the error log's tail if `proc` exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while _status(ns, "/configuration/checksum") != want:
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise ClusterError(f"the ingress controller (nginx) did not {'start' if proc else 'reload'}: "
                               f"{_log_tail(d)}")
        time.sleep(0.05)


def write_config(d: str, text: str) -> str:
    """The only writer of <d>/nginx.conf: confined to `d` (nginxsafe.confine), then tested by `nginx -t`, then
    put in place; returns the configuration's checksum.  Nothing is written when either check fails."""
    nginxsafe.confine(text, d)
    conf = os.path.join(d, "nginx.conf")
    write_file(conf + ".new", text, 0o600)
    try:
        _test(conf + ".new", d)
    except ClusterError:
        os.unlink(conf + ".new")
        raise
    os.replace(conf + ".new", conf)
    return nginxconf.checksum(text)


def make_dirs(d: str) -> None:
    """The controller's directory and its subdirectories, root's alone (nginx's workers need none of them)."""
    for sub in ("", "tmp", "certs"):
        path = os.path.join(d, sub)
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # made by an older emu with the umask's mode


def _nginx_in(ns: str | None) -> list[int]:
    """nginx processes inside the controller pod's namespace (what `ip netns pids` finds: same net namespace)."""
    if not ns:
        return []
    try:
        want = os.stat(os.path.join(netns.NETNS_RUN_DIR, ns)).st_ino
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != want:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().startswith(b"nginx"):
                    out.append(int(entry))
        except OSError:
            continue
    return out


def children(pid: int) -> set[int]:
    """The process's children (a master's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except (OSError, ValueError):
        return set()


def wait_retired(workers: set[int], timeout: float = RELOAD_TIMEOUT) -> None:
    """After a reload the old workers finish their requests but must stop accepting: nginx retitles them "worker
    process is shutting down" once their listening sockets are closed.  New connections then reach only workers
    with the new configuration."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = []
        for w in workers:
            title = read_file(f"/proc/{w}/cmdline") or ""
            if title.startswith("nginx: worker process") and "shutting down" not in title:
                busy.append(w)
        if not busy:
            return
        time.sleep(0.02)


def spawn(d: str, ns: str) -> subprocess.Popen[bytes]:
    """Start nginx (master and workers, not daemonized) in namespace `ns` with <d>/nginx.conf, reaped by a thread;
    its namespace and master pid are written to <d> at once."""
    conf = os.path.join(d, "nginx.conf")
    write_file(os.path.join(d, "netns"), ns, 0o644)  # where its processes live, for stop()
    with open(os.path.join(d, "nginx.out"), "ab") as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "nginx", "-p", d, "-e",
                                 os.path.join(d, "error.log"), "-c", conf, "-g", "daemon off; master_process on;"],
                                stdin=devnull, stdout=out, stderr=out, start_new_session=True, close_fds=True)
    threading.Thread(target=proc.wait, daemon=True).start()
    write_file(os.path.join(d, "master.pid"), f"{proc.pid}\n", 0o644)
    return proc


def reload(masters: set[int], ns: str, want: str, d: str) -> None:
    """SIGHUP every master, wait until nginx serves the configuration with checksum `want`, then until the old
    workers stopped accepting."""
    workers = {w for pid in masters for w in children(pid)}
    for pid in masters:
        os.kill(pid, signal.SIGHUP)
    wait_checksum(ns, want, d, RELOAD_TIMEOUT)
    wait_retired(workers)


def stop(rec: state.Record) -> None:
    """nginx of this cluster: SIGQUIT to each master (graceful, as `nginx -s quit`; SIGKILL after 3 s), then SIGKILL to
    workers a killed master left behind in the controller pod's namespace."""
    conf = os.path.join(directory(rec), "nginx.conf")
    for pid in pids(rec):
        processes.stop(pid, lambda p: _is_ours(p, conf), signal.SIGQUIT, group=True)
    for pid in _nginx_in(read_file(os.path.join(directory(rec), "netns"))):
        os.kill(pid, signal.SIGKILL)  # workers left behind by a master that was killed
