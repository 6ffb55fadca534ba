"""Safety of the lifecycle (issue 12): cluster names never become host paths, the state directory holds everything
emu deletes, concurrent commands on one cluster take turns, a closed output never rolls a cluster back, and a dead
daemon is reported, repaired, and never outlives its cluster."""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest

from emu.cluster import lifecycle as clusters
from emu.cluster.agent import server as agent_server
from emu.cluster import daemons
from emu.apply import netns, processes, state
from tests.conftest import TOPOLOGIES
from tests.waiting import wait_until

VXLAN = str(TOPOLOGIES / "flannel-vxlan.yaml")
DNS = str(TOPOLOGIES / "dns.yaml")


def emu(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, timeout=120, **kw)


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    """A user error: exit 2, one `error:` line on stderr, no traceback."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    return lines[0]


IN_CLOSE_NOWRITE = 0x10  # <sys/inotify.h>: a file opened read-only was closed


@contextlib.contextmanager
def reads_of(path: str) -> Iterator[Callable[[str], None]]:
    """Watch `path` with inotify(7); yields `wait(what)`, which returns once some process has opened the file
    for reading and closed it again since the watch began (or fails after a generous deadline)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        if libc.inotify_add_watch(fd, os.fsencode(path), IN_CLOSE_NOWRITE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

        def closed_after_read() -> bool:
            if not select.select([fd], [], [], 0.2)[0]:
                return False
            buf = os.read(fd, 4096)
            masks = []
            while buf:  # struct inotify_event {int wd; uint32_t mask, cookie, len; char name[len];}
                _, mask, _, n = struct.unpack_from("iIII", buf)
                masks.append(mask)
                buf = buf[16 + n:]
            return any(m & IN_CLOSE_NOWRITE for m in masks)

        yield lambda what: wait_until(closed_after_read, what=what)
    finally:
        os.close(fd)


# --- names never become host paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../{victim}", "{victim}", "..", "Upper", "a.b", "x" * 41, "x-", "a/b", "a\nb"])
def test_a_cluster_name_that_is_no_label_is_refused_and_nothing_is_deleted(tmp_path, name):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "keep").write_text("mine")
    arg = name.format(victim=os.path.relpath(victim, state.root())) if name.startswith("../") else \
        name.format(victim=victim)
    for cmd in (["down", arg], ["status", arg], ["get", "pods", "--cluster", arg], ["doctor", arg],
                ["up", VXLAN, "--name", arg], ["up", "--repair", arg], ["apply", "-f", VXLAN, "--cluster", arg],
                ["trace", "a", "b", "--cluster", arg], ["describe", "pod", "x", "--cluster", arg],
                ["cni", "log", "--cluster", arg]):
        line = one_line(emu(*cmd))
        assert "must be a DNS-1123 label" in line, (cmd, line)
    assert (victim / "sub" / "keep").read_text() == "mine"


def test_a_symlink_planted_in_the_state_directory_is_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("mine")
    (victim / state.RECORD_FILE).write_text(json.dumps({"name": "planted", "topology_file": ""}))
    os.makedirs(state.root(), exist_ok=True)
    link = os.path.join(state.root(), "planted")
    os.symlink(victim, link)
    junk = os.path.join(state.root(), "notacluster")
    os.makedirs(junk, exist_ok=True)  # a directory without emu's record
    try:
        st = json.loads(emu("status", "-o", "json").stdout)
        assert not {"planted", "notacluster"} & {c["name"] for c in st}  # only directories with our record
        r = emu("down", "planted")
        assert r.returncode == 0, r.stderr
        assert not os.path.lexists(link) and (victim / "keep").read_text() == "mine"  # the link went, not its target
        with pytest.raises(Exception, match="outside"):
            state.confined(os.path.join(junk, "x"), str(tmp_path))
    finally:
        if os.path.lexists(link):
            os.unlink(link)
        os.rmdir(junk)


# --- closed output ----------------------------------------------------------------------------------------------------


def test_up_keeps_the_cluster_when_its_reader_goes_away():
    """`emu up FILE 2>&1 | head -1`: the reader leaves after the first progress line; up must not roll back."""
    p = subprocess.Popen([sys.executable, "-m", "emu", "up", VXLAN, "--name", "sfpipe"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        assert p.stdout is not None
        first = p.stdout.readline()
        assert first, "up printed nothing"
        p.stdout.close()  # what head -1 does after its line
        p.wait(timeout=120)
        rec = state.load("sfpipe")
        assert rec is not None and rec.status == "up", "the cluster was rolled back"
        assert all(netns.exists(n) for n in rec.netns)
    finally:
        clusters.down("sfpipe")


# --- concurrent commands take turns -----------------------------------------------------------------------------------


def _pod_manifest(tmp_path, name: str) -> str:
    f = tmp_path / f"{name}.yaml"
    f.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}, namespace: default, labels: {{app: extra}}}}
        spec:
          containers:
          - name: c
            ports: [{{containerPort: 80}}]
        """))
    return str(f)


def test_concurrent_applies_take_turns_and_down_removes_everything(tmp_path, emu_cluster):
    with emu_cluster(VXLAN, "sflock") as c:
        files = [_pod_manifest(tmp_path, f"extra-{i}") for i in range(3)]
        procs = [subprocess.Popen([sys.executable, "-m", "emu", "apply", "-f", f, "--cluster", c.name],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        rec = state.load(c.name)
        pods = {d["body"]["metadata"]["name"] for d in rec.documents if d["body"].get("kind") == "Pod"}
        assert {"extra-0", "extra-1", "extra-2"} <= pods  # nobody's record overwrote another's
        made = [n for n in rec.netns if ".default.extra-" in n]
        assert len(made) == 3 and all(netns.exists(n) for n in made)
    assert not any(netns.exists(n) for n in made)  # down removed what all three applies made


def test_a_waiting_command_says_so_and_one_that_outlived_its_cluster_fails_cleanly(tmp_path, emu_cluster):
    with emu_cluster(VXLAN, "sfwait") as c:
        f = _pod_manifest(tmp_path, "late")
        lock = state.Lock.take(c.name, "test holder")
        try:
            p = subprocess.Popen([sys.executable, "-m", "emu", "apply", "-f", f, "--cluster", c.name],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # it says it waits (after state.LOCK_NOTICE) and is still waiting when it has said so
            assert wait_until(lambda: select.select([p.stderr], [], [], 0.2)[0], what="apply to say it waits")
            first = p.stderr.readline()
            assert p.poll() is None, "apply did not wait for the lock"
            clusters._remove(state.load(c.name))  # what `emu down` does while it holds the lock
        except BaseException:
            p.kill()  # the test failed: the apply must not go on to change the cluster behind the teardown
            p.communicate()
            raise
        finally:
            lock.release()
        out, err = p.communicate(timeout=60)
        assert p.returncode == 1, (out, first + err)
        lines = (first + err).strip().splitlines()
        assert lines[0] == f"waiting for cluster 'sfwait': pid {os.getpid()} (test holder) is changing it"
        assert lines[1:] == ["error: cluster 'sfwait' was removed (emu down) while emu apply waited for it"]
        assert "Traceback" not in err


def test_read_only_commands_do_not_wait_for_the_lock(emu_cluster):
    with emu_cluster(VXLAN, "sfread") as c:
        with state.locked(c.name, "test holder"):
            r = emu("get", "pods", "--cluster", c.name)
            assert r.returncode == 0 and "web-0" in r.stdout and "waiting" not in r.stderr


# --- daemons: recorded first, reported when dead, repaired, never outliving the cluster --------------------------------


def test_a_dead_daemon_is_degraded_failed_by_doctor_named_by_probes_and_repaired(emu_cluster):
    with emu_cluster(VXLAN, "sfagent") as c:
        (agent_pid,) = daemons.agent_pids(state.load(c.name))
        os.kill(agent_pid, signal.SIGKILL)
        wait_until(lambda: processes.cmdline(agent_pid) is None, what="the agent to die")
        st = json.loads(emu("status", c.name, "-o", "json").stdout)[0]
        assert st["status"] == "degraded" and st["down"] == ["agent"]
        assert "degraded (agent down)" in emu("status", c.name).stdout
        doc = emu("doctor", c.name, "--check", "daemons", "-o", "json")
        assert doc.returncode == 1
        (f,) = json.loads(doc.stdout)["findings"]
        assert f["status"] == "fail" and f["subject"] == "daemon/agent"
        pr = emu("probe", "default/web-0", "default/web-1", "--port", "80", "--cluster", c.name)
        assert pr.returncode != 0 and "not the network: emu's agent" in pr.stdout
        r = emu("up", "--repair", c.name)
        assert r.returncode == 0 and r.stdout.strip() == f"cluster {c.name}: restarted agent", r.stderr
        assert json.loads(emu("status", c.name, "-o", "json").stdout)[0]["status"] == "up"
        assert emu("probe", "default/web-0", "default/web-1", "--port", "80", "--cluster", c.name).returncode == 0
        # the next command that changes the cluster repairs too
        (pid,) = daemons.agent_pids(state.load(c.name))
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: processes.cmdline(pid) is None, what="the agent to die")  # a dying agent still runs
        c.mark("default/web-2", "ready")
        assert not daemons.down(state.load(c.name))


def test_the_dns_server_records_itself_and_leaves_with_its_cluster(emu_cluster):
    with emu_cluster(DNS, "sfdns") as c:
        rec = state.load(c.name)
        d = os.path.join(rec.dir, "dns")
        (pid,) = [x.pids for x in daemons.expected(rec) if x.name == "dns"][0]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: processes.cmdline(pid) is None, what="the DNS server to die")
        assert [x.name for x in daemons.down(state.load(c.name))] == ["dns"]
        # As if `up` was SIGKILLed right after the fork: the server is running, but nobody recorded it.
        rec.set_pid("dns", None)
        rec.save()
        os.unlink(os.path.join(d, "dns.pid"))
        env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(__file__)))}
        orphan = subprocess.Popen([sys.executable, "-m", "emu.addons.dns.server", "--dir", d], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: processes.read_pids(os.path.join(d, "dns.pid")) == {orphan.pid},
                 what="the server to write its own pid file")
        # Its cluster's files vanish (a `down` that ran before the pid file existed): it leaves by itself.
        os.rename(os.path.join(d, "server.json"), os.path.join(d, "server.json.away"))
        orphan.wait(timeout=30)
        os.rename(os.path.join(d, "server.json.away"), os.path.join(d, "server.json"))
        # Recorded only by its own pid file, `down` still finds and stops it.
        again = subprocess.Popen([sys.executable, "-m", "emu.addons.dns.server", "--dir", d], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: processes.read_pids(os.path.join(d, "dns.pid")) == {again.pid}, what="the pid file")
        threading.Thread(target=again.wait, daemon=True).start()
    wait_until(lambda: processes.cmdline(again.pid) is None, what="down to stop the unrecorded server")


def test_nginx_leaves_with_its_cluster_even_when_down_missed_it(emu_cluster):
    """nginx cannot watch its cluster's directory; the agent, which does, stops it when the directory goes."""
    from emu.addons.ingress import controller

    with emu_cluster(str(TOPOLOGIES / "ingress.yaml"), "sfnginx") as c:
        rec = state.load(c.name)
        (master,) = controller.pids(rec)
        spec = os.path.join(rec.agent_dir, "agent.json")
        # The agent remembers nginx's pid by reading nginx.pid at its once-a-second check (processes.Companion):
        # wait until it has read the file once more, rather than for a guessed time.
        with reads_of(agent_server.ingress_nginx(rec.agent_dir).pid_file) as read:
            read("the agent to read nginx.pid")
        os.rename(spec, spec + ".away")  # as if the cluster's directory had gone
        try:
            wait_until(lambda: processes.cmdline(master) is None, what="nginx to leave with the agent")
        finally:
            os.rename(spec + ".away", spec)
