"""A hostile Ingress cannot read or write host files through the controller's nginx.

Layers, each shown on its own: (a) validation refuses the Ingress (ingress-nginx's annotation validators, its
path inspection, the API server's service-name rule) before anything is built; (b) whatever reaches the lowest-level
writer is confined to the controller's directory (nginxsafe.confine) before nginx or `nginx -t` sees it; (c) even a
configuration put in place behind emu's back cannot make nginx's workers read a root-only file (they run as
nobody).  Last, nginx is found from the pid file it writes itself, so a SIGKILLed `emu up` leaves none behind `down`.
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid

import pytest
from click.testing import CliRunner

from emu.cluster import lifecycle as clusters
from emu.apply import state
from emu.cli.commands import main
from emu.addons.ingress import controller, nginxconf, nginxproc, nginxsafe, routing
from tests.conftest import TOPOLOGIES
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v nginx"], capture_output=True).returncode,
                                reason="nginx is not installed (tools/setup installs nginx-light)")
RT = "nginx.ingress.kubernetes.io/rewrite-target"


@pytest.fixture
def host_dir():
    """A directory outside the state dir, traversable by anyone, holding a root-only file and a public one."""
    d = tempfile.mkdtemp(prefix="emu-host-")
    os.chmod(d, 0o755)
    for name, mode, text in (("secret.txt", 0o600, "TOPSECRET\n"), ("public.txt", 0o644, "PUBLIC\n")):
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, mode)
        os.write(fd, text.encode())
        os.close(fd)
    try:
        yield d
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


def _ingress(name: str, annotations: dict[str, str], path: str = "/", ptype: str = "Prefix",
             service: str = "web") -> str:
    ann = "".join(f"\n    {k}: {v!r}" for k, v in annotations.items()) or " {}"
    return textwrap.dedent(f"""\
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: {name}
          annotations:""") + ann + textwrap.dedent(f"""
        spec:
          ingressClassName: nginx
          rules:
          - http:
              paths:
              - path: {path!r}
                pathType: {ptype}
                backend: {{service: {{name: {service!r}, port: {{number: 80}}}}}}
        """)


# (Ingress name, document, the field the one error line names)
def _shapes(host: str) -> list[tuple[str, str, str]]:
    return [
        ("read-shadow", _ingress("read-shadow", {RT: f"/ break; }} location /leak/ {{ alias {host}/; }} "
                                                 "location /z { rewrite ^ /"}), f"metadata.annotations[{RT}]"),
        ("write-log", _ingress("write-log", {RT: f"/; access_log {host}/pwned.log"}), f"metadata.annotations[{RT}]"),
        ("snippet", _ingress("snippet", {"nginx.ingress.kubernetes.io/configuration-snippet":
                                         f"alias {host}/;"}),
         "metadata.annotations[nginx.ingress.kubernetes.io/configuration-snippet]"),
        ("bool", _ingress("bool", {"nginx.ingress.kubernetes.io/use-regex": "true; alias /etc/"}),
         "metadata.annotations[nginx.ingress.kubernetes.io/use-regex]"),
        ("path", _ingress("path", {}, path=f"/x; alias {host}/;", ptype="ImplementationSpecific"),
         "spec.rules[0].http.paths[0].path"),
        ("svc", _ingress("svc", {}, service="web;alias"), "spec.rules[0].http.paths[0].backend.service.name"),
    ]


def _cluster_doc(name: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: emu.dev/v1alpha1
        kind: Cluster
        metadata: {{name: {name}}}
        spec: {{nodes: 1}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: web}}
        spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
        ---
        """)


def _netns() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("dry_run", [True, False])
def test_up_refuses_each_injection_with_one_line_and_builds_nothing(tmp_path, host_dir, dry_run):
    for ing_name, doc, field in _shapes(host_dir):
        name = f"ingsafe-{uuid.uuid4().hex[:6]}"
        f = tmp_path / f"{ing_name}.yaml"
        f.write_text(_cluster_doc(name) + doc)
        before = _netns()
        try:
            r = CliRunner().invoke(main, ["up", str(f)] + (["--dry-run"] if dry_run else []))
            assert r.exit_code == 2, (ing_name, r.output)
            lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
            assert len(lines) == 1 and str(f) in lines[0] and f"Ingress {ing_name}" in lines[0] and \
                field in lines[0], (ing_name, r.output)
            assert not any(n.startswith(name) for n in _netns() - before)
            assert not os.path.exists(state.cluster_dir(name))
        finally:
            clusters.down(name)  # only an up that wrongly succeeded left something; a no-op otherwise
    assert sorted(os.listdir(host_dir)) == ["public.txt", "secret.txt"]


@pytest.fixture(scope="module")
def ing(emu_cluster):
    with emu_cluster(str(TOPOLOGIES / "ingress.yaml")) as c:
        yield c


def _conf(c) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    d = os.path.join(state.load(c.name).dir, "ingress")
    with open(os.path.join(d, "nginx.conf")) as f:
        return d, f.read()


def test_apply_refuses_each_injection_and_leaves_nginx_alone(ing, tmp_path, host_dir):
    d, conf_before = _conf(ing)
    for ing_name, doc, field in _shapes(host_dir):
        f = tmp_path / f"{ing_name}.yaml"
        f.write_text(doc)
        r = subprocess.run([os.path.join(os.path.dirname(sys.executable), "emu"), "apply", "-f", str(f),
                            "--cluster", ing.name], capture_output=True, text=True)
        assert r.returncode == 2, (ing_name, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and f"Ingress {ing_name}" in lines[0] and field in lines[0], (ing_name, r.stderr)
    assert _conf(ing)[1] == conf_before
    assert sorted(os.listdir(host_dir)) == ["public.txt", "secret.txt"]


def _inject(text: str, extra_server: str = "", extra_http: str = "") -> tuple[str, str]:
    """`text` with directives added to the default server and to http, under a new checksum."""
    old = nginxconf.checksum(text)
    new = (old[::-1])  # any other 16 hex digits: only the status server's answer must change
    out = text.replace("    }\n    ## end server _", f"        {extra_server}\n    }}\n    ## end server _", 1)
    out = out.replace("    # the status server", f"    {extra_http}\n    # the status server", 1)
    assert out != text
    return out.replace(old, new), new


def test_the_lowest_level_writer_refuses_host_paths_before_nginx_sees_them(ing, host_dir):
    d, text = _conf(ing)
    for server, http in ((f"location ^~ /leak/ {{ alias {host_dir}/; }}", ""),
                         ("", f"access_log {host_dir}/pwned.log;"),
                         ("", f"access_log {d}/../../../{os.path.basename(host_dir)}/pwned.log;")):
        bad, _ = _inject(text, server, http)
        with pytest.raises(nginxsafe.UnsafeConfig):
            nginxproc.write_config(d, bad)
        assert _conf(ing)[1] == text
        assert not os.path.exists(os.path.join(d, "nginx.conf.new"))
    assert sorted(os.listdir(host_dir)) == ["public.txt", "secret.txt"]  # not even `nginx -t` opened the log


def _get(c, url: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    r = c.exec("external", "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", url, check=False)
    body, _, code = r.stdout.rpartition("\n")
    return code, body


def _reload(c, ns: str, d: str, text: str, digest: str) -> None:  # type: ignore[no-untyped-def]
    """nginx.conf replaced by hand and reloaded (SIGHUP), until only workers with the new text accept."""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(text)
    pids = nginxproc.pids(state.load(c.name))
    workers = {w for p in pids for w in nginxproc.children(p)}
    for pid in pids:
        os.kill(pid, signal.SIGHUP)
    nginxproc.wait_checksum(ns, digest, d, 10)
    nginxproc.wait_retired(workers)


def test_workers_cannot_read_a_root_only_file_even_with_a_config_put_behind_emus_back(ing, host_dir):
    """Bypass validation and the writer: put an `alias` to a host directory in place and reload.  The public file
    proves the location works; the root-only one is refused by the kernel (nginx answers 403), because the workers
    run as nobody."""
    cl = clusters.open_cluster(ing.name)
    d, text = _conf(ing)
    bad, digest = _inject(text, f"location ^~ /leak/ {{ alias {host_dir}/; }}")
    ns = cl.plan.pod(routing.controller_pod(cl)).netns.name
    lb = routing.address(cl).ip
    try:
        _reload(ing, ns, d, bad, digest)
        code, body = _get(ing, f"http://{lb}/leak/public.txt")
        assert (code, body.strip()) == ("200", "PUBLIC")
        code, body = _get(ing, f"http://{lb}/leak/secret.txt")
        assert code == "403" and "TOPSECRET" not in body
        with open(os.path.join(d, "error.log")) as f:
            assert "secret.txt\" failed (13: Permission denied)" in f.read()
    finally:
        _reload(ing, ns, d, text, nginxconf.checksum(text))


def test_workers_run_unprivileged_and_the_directory_is_roots_alone(ing):
    d, _ = _conf(ing)
    pid = nginxproc.pids(state.load(ing.name)).pop()
    workers = nginxproc.children(pid)
    assert workers
    for w in workers:
        with open(f"/proc/{w}/status") as f:
            uid = next(line.split()[1:] for line in f if line.startswith("Uid:"))
        assert set(uid) == {str(pwd.getpwnam(nginxsafe.WORKER_USER).pw_uid)}  # real, effective, saved, fs
    for sub in ("", "certs", "tmp"):
        assert os.stat(os.path.join(d, sub)).st_mode & 0o777 == 0o700
    keys = [f for f in os.listdir(os.path.join(d, "certs")) if f.endswith(".key")]
    assert keys and all(os.stat(os.path.join(d, "certs", k)).st_mode & 0o777 == 0o600 for k in keys)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _gone(pids: set[int]) -> bool:
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().startswith(b"nginx"):
                    return False
        except OSError:
            pass
    return True


def test_stop_finds_nginx_from_its_own_pid_file(emu_cluster):
    """Neither the record's pid nor master.pid nor the namespace note: nginx's own `pid` file is enough."""
    with emu_cluster(str(TOPOLOGIES / "ingress.yaml")) as c:
        rec = state.load(c.name)
        d = os.path.join(rec.dir, "ingress")
        pid = nginxproc.pids(rec).pop()
        workers = nginxproc.children(pid)
        for f in ("master.pid", "netns"):
            os.unlink(os.path.join(d, f))
        rec.set_pid("ingress-nginx", None)
        rec.save()
        rec = state.load(c.name)
        assert nginxproc.pids(rec) == {pid}
        controller.stop(rec)
        assert _gone(workers | {pid})


KILL_AFTER_SPAWN = """
import os, signal, subprocess, sys
real = subprocess.Popen
class Popen(real):
    def __init__(self, argv, *a, **k):
        super().__init__(argv, *a, **k)
        if "nginx" in argv and "-t" not in argv:  # the controller, just spawned: nothing recorded yet
            os.kill(os.getpid(), signal.SIGKILL)
subprocess.Popen = Popen
from emu.cli.commands import main
main(["up", sys.argv[1], "--name", sys.argv[2]])
"""


def test_down_after_up_was_killed_right_after_spawning_nginx_leaves_no_nginx():
    name = f"ingkill-{uuid.uuid4().hex[:6]}"
    r = subprocess.run([sys.executable, "-c", KILL_AFTER_SPAWN, str(TOPOLOGIES / "ingress.yaml"), name],
                       capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == -signal.SIGKILL, r.stderr
        d = os.path.join(state.cluster_dir(name), "ingress")
        # nginx writes it itself once its configuration is loaded
        wait_until(lambda: _read(os.path.join(d, "nginx.pid")), what="the orphaned nginx to write nginx.pid")
        assert not os.path.exists(os.path.join(d, "master.pid"))  # killed before emu wrote anything about it
        pids = nginxproc.pids(state.load(name))
        assert len(pids) == 1
        workers = {w for p in pids for w in nginxproc.children(p)}
    finally:
        down = CliRunner().invoke(main, ["down", name])
    assert down.exit_code == 0, down.output
    assert _gone(pids | workers)
