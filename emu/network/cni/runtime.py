"""The runtime side of the CNI specification (https://www.cni.dev/docs/spec/), as libcni implements it.

Pure part: the environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`),
each plugin's stdin (libcni's buildOneConfig: the list's `name` and `cniVersion`, `prevResult`, and `runtimeConfig`
holding only the capabilities the plugin declares), result parsing and version comparison.  The network
configuration list itself (NetConfList) is pure data in emu.network.cni.netconf.

Exec part: `Runtime` runs the plugins of a list for ADD (in order, each result the next one's prevResult), DEL (in
reverse, every plugin gets the cached result as prevResult from 0.4.0 on), CHECK (0.4.0+, cached result), VERSION,
and STATUS/GC for lists of 1.1.0+.  A plugin is started from a thread that entered the node's network namespace,
so everything it does outside CNI_NETNS happens in the node, never in the root namespace.  Results are cached as
libcni caches them (`<cache>/results/<network>-<containerID>-<ifname>`, kind cniCacheV1) and every call is
appended to a JSONL log (stdin, environment, exit status, stdout, stderr, duration) that `emu cni log` prints.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from emu.apply import netns
from emu.errors import EmuError
from emu.network.cni.netconf import NETWORK_NAME, NetConfList  # noqa: F401 (NETWORK_NAME: for importers)

PLUGIN_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 60.0


class CNIError(EmuError):
    """A plugin failed: the message names the plugin, the command and the pod, and carries the plugin's error JSON."""

    def __init__(self, message: str, error: dict[str, Any] | None = None):
        super().__init__(message)
        self.error = error


def version_tuple(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(v).split("."))
    except ValueError:
        return (0,)


def version_at_least(v: str, minimum: str) -> bool:
    return version_tuple(v) >= version_tuple(minimum)


@dataclass(frozen=True)
class RuntimeConf:
    """What the runtime knows about one attachment (libcni's RuntimeConf)."""

    container_id: str
    netns: str  # the pod namespace's path (/run/netns/<name>); "" when it is gone (DEL only)
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS, e.g. K8S_POD_NAMESPACE
    capability_args: dict[str, Any] = field(default_factory=dict)  # runtimeConfig: portMappings, bandwidth, ips, mac

    def to_json(self) -> dict[str, Any]:
        return {"containerId": self.container_id, "netns": self.netns, "ifName": self.ifname,
                "cniArgs": [list(a) for a in self.args], "capabilityArgs": self.capability_args}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RuntimeConf":
        return cls(d["containerId"], d.get("netns", ""), d.get("ifName", "eth0"),
                   tuple((str(k), str(v)) for k, v in d.get("cniArgs", [])), dict(d.get("capabilityArgs", {})))


def k8s_args(namespace: str, pod: str, infra_id: str) -> tuple[tuple[str, str], ...]:
    """The CNI_ARGS the kubelet's CRI runtime passes (containerd: IgnoreUnknown plus the K8S_POD_* keys)."""
    return (("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", pod),
            ("K8S_POD_INFRA_CONTAINER_ID", infra_id), ("K8S_POD_UID", infra_id[:8] + "-" + infra_id[8:12]))


def plugin_env(command: str, rt: RuntimeConf | None, cni_path: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The environment of one plugin call (libcni's invoke.Args.AsEnv), on a minimal PATH."""
    env = {"CNI_COMMAND": command, "CNI_PATH": os.pathsep.join(cni_path), "PATH": PLUGIN_PATH_ENV}
    if rt is not None:
        env["CNI_CONTAINERID"] = rt.container_id
        env["CNI_NETNS"] = rt.netns
        env["CNI_IFNAME"] = rt.ifname
        env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in rt.args)
    return env


def plugin_stdin(net: NetConfList, plugin: dict[str, Any], prev: dict[str, Any] | None,
                 rt: RuntimeConf | None) -> dict[str, Any]:
    """libcni's buildOneConfig + injectRuntimeConfig: the plugin's own object, with the list's name and version,
    prevResult when there is one, and runtimeConfig holding only the capabilities the plugin declares."""
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    conf.pop("runtimeConfig", None)
    if prev is not None:
        conf["prevResult"] = prev
    if rt is not None:
        caps = plugin.get("capabilities") or {}
        rc = {k: rt.capability_args[k] for k, on in caps.items() if on and k in rt.capability_args}
        if rc:
            conf["runtimeConfig"] = rc
    return conf


def parse_output(stdout: bytes) -> dict[str, Any] | None:
    text = stdout.decode(errors="replace").strip()
    if not text:
        return None
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        return None
    return out if isinstance(out, dict) else None


def sandbox_ips(result: dict[str, Any], ifname: str = "eth0") -> list[str]:
    """The CIDRs a result gives the sandbox's interface (`interface` indexes `interfaces`; 0.2.0 results have
    `ip4`), in order."""
    if "ip4" in result:  # 0.1.0/0.2.0
        return [result["ip4"]["ip"]] if result.get("ip4") else []
    ifaces = result.get("interfaces") or []
    out = []
    for ip in result.get("ips") or []:
        i = ip.get("interface")
        if i is not None and 0 <= i < len(ifaces):
            iface = ifaces[i]
            if iface.get("sandbox") and iface.get("name") == ifname:
                out.append(ip["address"])
                continue
            if not iface.get("sandbox"):
                continue
        out.append(ip["address"])
    return out


def sandbox_mac(result: dict[str, Any], ifname: str = "eth0") -> str:
    """The MAC a result reports for the sandbox's interface `ifname` ("" when it reports none)."""
    for i in result.get("interfaces") or []:
        if i.get("sandbox") and i.get("name") == ifname:
            return str(i.get("mac") or "")
    return ""


def host_interfaces(result: dict[str, Any]) -> list[str]:
    """Interfaces a result reports outside the sandbox (the bridge, the host veth)."""
    return [i["name"] for i in result.get("interfaces") or [] if not i.get("sandbox") and i.get("name")]


def find_plugin(ptype: str, bin_dirs: list[str] | tuple[str, ...]) -> str | None:
    if "/" in ptype:
        return None
    for d in bin_dirs:
        p = os.path.join(d, ptype)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def cache_path(cache_dir: str, net: str, container_id: str, ifname: str) -> str:
    return os.path.join(cache_dir, "results", f"{net}-{container_id}-{ifname}")


def cache_entry(net: NetConfList, rt: RuntimeConf, result: dict[str, Any]) -> dict[str, Any]:
    """libcni's cachedInfo (kind cniCacheV1)."""
    return {"kind": "cniCacheV1", "containerId": rt.container_id, "config": base64.b64encode(net.to_bytes()).decode(),
            "ifName": rt.ifname, "networkName": net.name, "cniArgs": [list(a) for a in rt.args],
            "capabilityArgs": rt.capability_args, "result": result}


@dataclass
class Call:
    """One plugin invocation, as the log keeps it."""

    command: str
    plugin: str
    path: str
    env: dict[str, str]
    stdin: dict[str, Any]
    code: int
    stdout: str
    stderr: str
    ms: float


class Runtime:
    """Runs the plugins of network configuration lists for one node: processes start inside `node_netns`."""

    def __init__(self, bin_dirs: list[str] | tuple[str, ...], cache_dir: str, log_path: str | None,
                 node_netns: str | None, labels: dict[str, str] | None = None, timeout: float = TIMEOUT):
        self.bin_dirs = list(bin_dirs)
        self.cache_dir = cache_dir
        self.log_path = log_path
        self.node_netns = node_netns
        self.labels = labels or {}
        self.timeout = timeout
        self.calls: list[Call] = []

    # --- one call ---------------------------------------------------------------------------------------------------

    def _exec(self, path: str, env: dict[str, str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        def run() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run([path], input=stdin, env=env, capture_output=True, timeout=self.timeout,
                                  cwd="/")
        if self.node_netns is None:
            return run()
        return netns.run_in(self.node_netns, run)

    def invoke(self, command: str, net: NetConfList, plugin: dict[str, Any], prev: dict[str, Any] | None,
               rt: RuntimeConf | None) -> dict[str, Any] | None:
        ptype = plugin["type"]
        path = find_plugin(ptype, self.bin_dirs)
        who = self._who(rt)
        if path is None:
            raise CNIError(f"CNI plugin {ptype!r} not found in {', '.join(self.bin_dirs)} "
                           f"({command} of network {net.name!r}{who})")
        conf = plugin_stdin(net, plugin, prev, rt)
        env = plugin_env(command, rt, self.bin_dirs)
        stdin = json.dumps(conf).encode()
        t0 = time.perf_counter()
        try:
            proc = self._exec(path, env, stdin)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            code, out, err = -9, e.stdout or b"", (e.stderr or b"") + f"timed out after {self.timeout}s".encode()
        ms = (time.perf_counter() - t0) * 1000
        call = Call(command, ptype, path, env, conf, code, out.decode(errors="replace"), err.decode(errors="replace"),
                    round(ms, 3))
        self.calls.append(call)
        self._log(call, net)
        parsed = parse_output(out)
        if code != 0:
            detail = json.dumps(parsed) if parsed else (call.stdout.strip() or call.stderr.strip() or f"exit {code}")
            raise CNIError(f"CNI plugin {ptype} failed {command} of network {net.name!r}{who}: {detail}", parsed)
        if command in ("ADD", "VERSION"):
            if parsed is None:
                raise CNIError(f"CNI plugin {ptype} returned no JSON result for {command} of network "
                               f"{net.name!r}{who}: {call.stdout.strip()!r}")
        return parsed

    def _who(self, rt: RuntimeConf | None) -> str:
        pod = self.labels.get("pod")
        return f" for pod {pod}" if pod else (f" for container {rt.container_id[:12]}" if rt else "")

    def _log(self, call: Call, net: NetConfList) -> None:
        if not self.log_path:
            return
        entry = {"time": time.time(), **self.labels, "node_netns": self.node_netns, "network": net.name,
                 "command": call.command, "plugin": call.plugin, "path": call.path, "env": call.env,
                 "stdin": call.stdin, "exit": call.code, "stdout": call.stdout, "stderr": call.stderr, "ms": call.ms}
        line = json.dumps(entry) + "\n"
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with _log_lock, open(self.log_path, "a") as f:
            f.write(line)

    # --- lists ------------------------------------------------------------------------------------------------------

    def add(self, net: NetConfList, rt: RuntimeConf) -> dict[str, Any]:
        """ADD every plugin in order; each result is the next plugin's prevResult; the last one is cached."""
        result: dict[str, Any] | None = None
        for p in net.plugins:
            out = self.invoke("ADD", net, p, result, rt)
            result = out if out is not None else result
        assert result is not None
        self._cache(net, rt, result)
        return result

    def delete(self, net: NetConfList, rt: RuntimeConf) -> None:
        """DEL every plugin in reverse order (0.4.0+: with the cached result as prevResult), then drop the cache.
        Every plugin is called even when one fails; the first failure is raised afterwards."""
        cached = self.cached(net.name, rt) if version_at_least(net.cni_version, "0.4.0") else None
        prev = cached["result"] if cached else None
        first: CNIError | None = None
        for p in reversed(net.plugins):
            try:
                self.invoke("DEL", net, p, prev, rt)
            except CNIError as e:
                first = first or e
        try:
            os.unlink(cache_path(self.cache_dir, net.name, rt.container_id, rt.ifname))
        except FileNotFoundError:
            pass
        if first:
            raise first

    def check(self, net: NetConfList, rt: RuntimeConf) -> None:
        """CHECK every plugin in order with the cached result (libcni: 0.4.0+, unless disableCheck)."""
        if not version_at_least(net.cni_version, "0.4.0"):
            raise CNIError(f"configuration version {net.cni_version} does not support the CHECK command")
        if net.disable_check:
            return
        cached = self.cached(net.name, rt)
        if cached is None:
            raise CNIError(f"no cached result for {net.name}/{rt.container_id[:12]}/{rt.ifname}: was it ADDed?")
        for p in net.plugins:
            self.invoke("CHECK", net, p, cached["result"], rt)

    def version(self, ptype: str, cni_version: str = "1.0.0") -> dict[str, Any]:
        net = NetConfList("version", cni_version, ({"type": ptype},))
        out = self.invoke("VERSION", net, {"type": ptype}, None, None)
        assert out is not None
        return out

    def status(self, net: NetConfList) -> None:
        """STATUS (spec 1.1.0): every plugin must report ready; a no-op for older lists."""
        if version_at_least(net.cni_version, "1.1.0"):
            for p in net.plugins:
                self.invoke("STATUS", net, p, None, None)

    def gc(self, net: NetConfList, valid: list[tuple[str, str]]) -> None:
        """GC (spec 1.1.0) with cni.dev/valid-attachments; a no-op for older lists."""
        if not version_at_least(net.cni_version, "1.1.0"):
            return
        attachments = [{"containerID": c, "ifname": i} for c, i in valid]
        for p in net.plugins:
            self.invoke("GC", net, {**p, "cni.dev/valid-attachments": attachments}, None, None)

    # --- cache ------------------------------------------------------------------------------------------------------

    def _cache(self, net: NetConfList, rt: RuntimeConf, result: dict[str, Any]) -> None:
        path = cache_path(self.cache_dir, net.name, rt.container_id, rt.ifname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cache_entry(net, rt, result), f)
        os.replace(tmp, path)

    def cached(self, net_name: str, rt: RuntimeConf) -> dict[str, Any] | None:
        try:
            with open(cache_path(self.cache_dir, net_name, rt.container_id, rt.ifname)) as f:
                out = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return out if isinstance(out, dict) else None


_log_lock = threading.Lock()


def read_log(path: str, pod: str | None = None) -> list[dict[str, Any]]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                if pod is None or e.get("pod") == pod:
                    out.append(e)
    except FileNotFoundError:
        pass
    return out


def replay_command(entry: dict[str, Any]) -> str:
    """A shell line that repeats a logged call by hand (inside the node's namespace)."""
    env = " ".join(f"{k}={_shq(v)}" for k, v in entry["env"].items() if k != "PATH")
    pre = f"ip netns exec {entry['node_netns']} " if entry.get("node_netns") else ""
    return f"echo {_shq(json.dumps(entry['stdin']))} | {pre}env {env} {entry['path']}"


def _shq(s: str) -> str:
    return "'" + str(s).replace("'", "'\"'\"'") + "'"
