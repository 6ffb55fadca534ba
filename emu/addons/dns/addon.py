"""The cluster DNS addon, as kubeadm installs it: the `coredns` ConfigMap (kube-system) brings the `coredns`
Deployment (2 replicas, k8s-app=kube-dns, dnsPolicy Default) and the `kube-dns` Service at serviceCIDR .10 (dns
53/UDP, dns-tcp 53/TCP, metrics 9153/TCP) into the model (emu.addons.dns.documents), unless the topology has its own.

The server is a second per-cluster daemon (emu.addons.dns.server) answering inside the coredns pods' namespaces, so
queries reach it through kube-proxy's rules for the ClusterIP.  Every pod and node gets kubelet's resolv.conf in
/etc/netns/<netns>/resolv.conf (what `ip netns exec`, hence `emu exec`, bind-mounts over /etc/resolv.conf)."""
from __future__ import annotations

import json
import os
import time
from typing import Any

from emu.addons.dns import corefile, corelog, records, server
from emu.addons.dns.desired import (SERVER_MODULE, _bodies, cluster_dns_ip, config, host_network_resolv_confs,
                                    node_dns, pod_dns_config, resolv_confs, server_config, server_pods)
from emu.addons.dns.documents import corefile_text
from emu.apply import processes, state
from emu.errors import ClusterError

ETC_NETNS = processes.etc_netns()  # one reading of EMU_ETC_NETNS, in processes
NAME = "dns"  # its entry in the record (emu.addons.dns.hooks)


# --- a running cluster ---------------------------------------------------------------------------------------------


def dns_dir(rec: state.Record) -> str:
    return os.path.join(rec.dir, "dns")


def pod_resolv_path(rec: state.Record, key: str) -> str:
    """Where a hostNetwork pod's resolv.conf is kept (the record: removed with it); `emu exec` mounts it."""
    return os.path.join(rec.dir, "pods", key, "resolv.conf")


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_resolv_confs(cl: Any) -> None:
    rec = cl.record
    want = {os.path.join(ETC_NETNS, ns, "resolv.conf"): text for ns, text in resolv_confs(cl).items()}
    rec.set_files(NAME, rec.files(NAME) + list(want))
    rec.save()  # ownership first
    for path, text in want.items():
        _write_atomic(path, text)
    for key, text in host_network_resolv_confs(cl).items():
        _write_atomic(pod_resolv_path(rec, key), text)
    for path in set(rec.files(NAME)) - set(want):
        processes.remove_etc(path)
    rec.set_files(NAME, list(want))
    rec.save()


def write_zone(cl: Any) -> bool:
    text = corefile_text(_bodies(cl.record))
    if text is None:
        return False
    cfg = corefile.parse(text)
    d = dns_dir(cl.record)
    os.makedirs(d, exist_ok=True)
    _write_atomic(os.path.join(d, "server.json"), json.dumps(server_config(cl, cfg, text)))
    _write_atomic(os.path.join(d, "zone.json"), json.dumps(records.snapshot(cl, cfg)))
    return True


def start(cl: Any) -> None:
    """Up: resolv.conf for every pod and node; with the coredns ConfigMap, the zone and the server."""
    write_resolv_confs(cl)
    if not write_zone(cl):
        return
    if pids(cl.record):
        return
    d = dns_dir(cl.record)
    ready = os.path.join(d, "dns.ready")
    if os.path.exists(ready):
        os.unlink(ready)
    proc = processes.spawn_module(SERVER_MODULE, d, "dns.log", server.PID_FILE)
    cl.record.set_pid(NAME, proc.pid)
    cl.record.save()
    deadline = time.monotonic() + 20
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ClusterError(f"the DNS server did not start: {_log_tail(d)}")
        time.sleep(0.02)


def sync(cl: Any) -> None:
    """After emu apply/delete/mark: new records (the server re-reads zone.json), resolv.conf for new pods."""
    start(cl)


def pod_log(rec: state.Record, pod_key: str) -> str:
    """Where the DNS server writes what this coredns pod's CoreDNS would print (emu.addons.dns.corelog)."""
    return corelog.log_path(dns_dir(rec), pod_key)


def _log_tail(d: str) -> str:
    try:
        with open(os.path.join(d, "dns.log")) as f:
            return " | ".join(f.read().splitlines()[-5:])
    except OSError:
        return "(no dns.log)"


def _is_ours(pid: int, d: str) -> bool:
    argv = processes.cmdline(pid)
    return argv is not None and SERVER_MODULE in argv and os.path.abspath(d) in argv


def pids(rec: state.Record) -> set[int]:
    """The live DNS server processes of this cluster: the recorded pid and the server's own pid file."""
    d = dns_dir(rec)
    found = {rec.pid(NAME)} - {None}
    found |= processes.read_pids(os.path.join(d, server.PID_FILE))
    return {p for p in found if _is_ours(p, d)}


def stop(rec: state.Record) -> None:
    """Down: the server, then the resolv.conf files the record names."""
    d = dns_dir(rec)
    for pid in pids(rec):
        processes.stop(pid, lambda p: _is_ours(p, d))
    for path in rec.files(NAME):
        processes.remove_etc(path)
