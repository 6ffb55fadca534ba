"""emu.plan.content: the plan's sets, rulesets, IPVS services, files and daemons rendered as shell lines, in felix's
order, that replay exactly (the files are written back here by bash and compared byte for byte; no root needed)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from emu.plan.content import (EMU_STATE_PREAMBLE, Command, Daemon, File, Ipsets, Ipvs, PlanObject, Ruleset,
                              record_path, render)

NS = "c.node-1"


def test_objects_come_in_felixs_order_and_keep_their_order_within_a_kind() -> None:
    objs = [Daemon("d", "x", None, ("true",)), File("/f", "x", "a\n"), Ipvs(NS, "n", "-A -t 1.2.3.4:80 -s rr\n"),
            Ruleset(NS, "n", "nft -f -", "table ip t {}\n"), Ipsets(NS, "n", "create s hash:ip\n"),
            Ruleset(NS, "n", "iptables-nft-restore --noflush -w", "*filter\nCOMMIT\n"),
            Command(NS, "n", ("sysctl", "-w", "net.ipv4.vs.conntrack=1"))]
    heads = [line.split("\n")[0] for line in render(objs)]
    assert heads == [f"ip netns exec {NS} sysctl -w net.ipv4.vs.conntrack=1",
                     f"ip netns exec {NS} ipset restore -exist <<'EOF'",
                     f"ip netns exec {NS} nft -f - <<'EOF'",
                     f"ip netns exec {NS} iptables-nft-restore --noflush -w <<'EOF'",
                     f"ip netns exec {NS} ipvsadm --restore <<'EOF'",
                     "mkdir -p /", "cat > /f <<'EOF'", "true &"]


@pytest.mark.parametrize("obj, text", [
    (Ipsets(NS, "n", "create s hash:ip -exist\n", exist=False),
     f"ip netns exec {NS} ipset restore <<'EOF'\ncreate s hash:ip -exist\nEOF"),
    (Ruleset(NS, "n", "iptables-legacy-restore --noflush -w", "*nat\nCOMMIT"),  # a final newline is added
     f"ip netns exec {NS} iptables-legacy-restore --noflush -w <<'EOF'\n*nat\nCOMMIT\nEOF"),
    (Ruleset(NS, "n", "nft -f -", "EOF\nEOF1\n"),  # a line that is the delimiter: another one
     f"ip netns exec {NS} nft -f - <<'EOF2'\nEOF\nEOF1\nEOF2"),
    (Command(NS, "n", ("ip", "-batch", "-"), "link add kube-ipvs0 type dummy\n"),
     f"ip netns exec {NS} ip -batch - <<'EOF'\nlink add kube-ipvs0 type dummy\nEOF"),
    (Daemon("nginx", "ingress-nginx", "c.ingress-nginx.ctl", ("nginx", "-p", "$EMU_STATE/c/ingress", "-g",
                                                             "daemon off; master_process on;")),
     "ip netns exec c.ingress-nginx.ctl nginx -p \"$EMU_STATE/c/ingress\" -g 'daemon off; master_process on;' &"),
    (Daemon("dns", "dns", None, ("python3", "-m", "emu.addons.dns.server", "--dir", "$EMU_STATE/c/dns")),
     'python3 -m emu.addons.dns.server --dir "$EMU_STATE/c/dns" &'),
], ids=["ipset-no-exist", "final-newline", "delimiter", "command", "daemon-in-netns", "daemon-on-host"])
def test_each_kind_as_a_person_would_type_it(obj: PlanObject, text: str) -> None:
    assert "\n".join(render([obj])) == text


def test_files_say_how_they_are_written() -> None:
    d = record_path("c", "ingress")
    lines = render([File(f"{d}/nginx.conf", "x", f"pid \"{d}/nginx.pid\";\n", 0o600),
                    File(f"{d}/warnings.json", "x", "[]"), File("/etc/netns/c.node-1/resolv.conf", "x", ""),
                    File(f"{d}/a", "x", "plain $HOME text\n")])
    assert lines == [
        'mkdir -p "$EMU_STATE/c/ingress"',
        "sed 's|\\$EMU_STATE|'\"$EMU_STATE\"'|g' > \"$EMU_STATE/c/ingress/nginx.conf\" <<'EOF'\n"
        'pid "$EMU_STATE/c/ingress/nginx.pid";\nEOF',
        'chmod 600 "$EMU_STATE/c/ingress/nginx.conf"',
        "printf '%s' '[]' > \"$EMU_STATE/c/ingress/warnings.json\"",  # no final newline: exactly these bytes
        "mkdir -p /etc/netns/c.node-1", ": > /etc/netns/c.node-1/resolv.conf",
        "cat > \"$EMU_STATE/c/ingress/a\" <<'EOF'\nplain $HOME text\nEOF"]


def test_files_replay_byte_for_byte(tmp_path: Path) -> None:
    """What bash writes from the rendered lines is each file's text (with the real state directory) and mode."""
    state = tmp_path / "state"
    files = [File(record_path("c", "ingress", "nginx.conf"), "x", 'pid "$EMU_STATE/c/ingress/nginx.pid";\n$x\n',
                  0o600),
             File(record_path("c", "agent", "agent.json"), "x", '{"a": "it\'s", "b": "\\n$HOME"}'),
             File(str(tmp_path / "etc" / "c.node-1" / "resolv.conf"), "x", "nameserver 172.18.0.1\n"),
             File(str(tmp_path / "etc" / "c.node-1" / "hosts"), "x", "EOF\n127.0.0.1\tlocalhost\n"),
             File(record_path("c", "empty"), "x", "")]
    script = "set -e\numask 022\n" + EMU_STATE_PREAMBLE + "\n" + "\n".join(render(files)) + "\n"
    r = subprocess.run(["bash", "-c", script], env={**os.environ, "EMU_STATE_DIR": str(state)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for f in files:
        path = Path(f.path.replace("$EMU_STATE", str(state)))
        assert path.read_text() == f.text.replace("$EMU_STATE", str(state)), f.path
        assert path.stat().st_mode & 0o777 == f.mode, f.path


def test_record_paths_name_the_state_directory() -> None:
    assert record_path("c", "pods", "ns/pod", "resolv.conf") == "$EMU_STATE/c/pods/ns/pod/resolv.conf"
    assert EMU_STATE_PREAMBLE == 'EMU_STATE="${EMU_STATE_DIR:-/run/emu}"'
