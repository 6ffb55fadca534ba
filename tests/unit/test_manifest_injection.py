"""Hostile values in manifests never reach a command line, a rule or a file: validation refuses each, in one line
naming the file, the object and the field.

Every place a string from a topology or manifest is written into a command, a rule or a file, and what guards it
(file:function -> sink -> guard):

- emu/apply/links.py:_write_sysctls -> /proc/sys/<key> path and the value written to it; emu/plan/render.py (dry-run
  text `ip netns exec NS sysctl -qw KEY=VALUE`) -> emu/model/nodesettings.py:parse (KEY: dotted words, no '/', no empty
  component, so no `..`; VALUE: digits, letters, space, `-_.:,`, at most 256; kernel_problem: the key exists on this
  kernel and is writable in a node namespace).
- emu/model/names.py:pod_netns / node_netns -> /run/netns/<name>, /etc/netns/<name>/resolv.conf (emu/addons/dns/addon.py
  write_resolv_confs), `ip netns exec` in dry-run text -> emu/model/documents.py DNS_LABEL / DNS_SUBDOMAIN (anchored
  with \\Z: `$` let "web\\n" through) for namespaces, pods and nodes; emu/model/pods.py:check (netns name at most
  NAME_MAX bytes); cluster names: emu/model/names.py:cluster_name_error (the lead's).
- emu/addons/dns/resolvconf.py:DNSConfig.render -> the pod's resolv.conf (`search`, `nameserver`, `options` lines) ->
  emu/addons/dns/validation.py:validate (nameservers are IP addresses, searches DNS subdomains, option names and values
  printable with no whitespace).
- emu/addons/dns/addon.py:write_zone -> server.json (JSON) -> emu/addons/dns/server.py connects to each forward upstream
  -> emu/addons/dns/corefile.py:_check_upstream (an IP address or /etc/resolv.conf: no host file read as a resolv.conf,
  no name resolved on the machine), _server (port 1-65535); ConfigMap name and data keys:
  dns/documents.py:check_configmap.
- emu/addons/kubeproxy/iptables.py, nftables.py, ipvs.py -> `-m comment --comment "ns/svc:port ..."` and nft comments,
  chain names hashed from them -> Service names and port names are DNS labels (emu/model/services.py:parse_service,
  _ports), namespaces DNS labels (emu/model/pods.py:parse_namespace + check_namespaced).
- emu/addons/netpol/rules.py:comment -> `-m comment --comment "ns/policy ..."` -> policy names DNS subdomains,
  namespaces DNS labels (emu/addons/netpol/parse.py:parse_policy), and comment() itself drops quotes and control
  characters.
- emu/addons/multus/wire.py:wire / emu/network/cni/runtime.py:cache_path -> interface names (netlink IFLA_IFNAME,
  CNI_IFNAME, the result cache file `<net>-<id>-<ifname>`) -> multus.nad.ifname_problem (Linux dev_valid_name); a NAD
  config's name (the cache file's `<net>`) -> multus.nad.parse_nad with cni.netconf.NETWORK_NAME (libcni
  ValidateNetworkName).
- emu/network/cni/runtime.py:find_plugin -> the plugin binary executed -> NetConfList.from_dict: a plugin type is a file
  name (NETWORK_NAME: no '/', no leading '.'); conflist name -> NETWORK_NAME; the conflist is read with
  yamlsafe.read_text (a regular file, bounded).
- emu/network/cni/runtime.py CNI_ARGS `K8S_POD_NAMESPACE=..;K8S_POD_NAME=..` -> DNS label / subdomain names (no ';',
  '=').
- pod annotations: bandwidth -> tc (emu/model/quantity.py:bandwidth_bps), emu.dev/ips and emu.dev/mac -> runtimeConfig
  (emu/network/cni/capabilities.py), k8s.v1.cni.cncf.io/networks -> multus.nad.parse_requests; labels -> JSON records
  and selectors only (documents.parse_labels: the API server's key and value syntax).
- nginx.conf, the external host's /etc/hosts, TLS files (emu/addons/ingress/*): the ingress helper's, covered by
  tests/integration/test_ingress_safety.py.
"""
from __future__ import annotations

import json

import pytest

from emu.cluster import planner
from emu.network.cni import config as cni_config
from emu.errors import ValidationError

CLUSTER = "apiVersion: emu.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  nodes: 1\n"
HOSTILE = {"semicolon": "a;touch /tmp/pwned", "newline": "a\nb", "quote": 'a"b', "subshell": "$(id)",
           "dash": "-rf", "dotdot": "../../etc/passwd", "nul": "a\0b", "long": "a" * 300}


def one_problem(text: str, obj: str, field: str) -> str:
    """The load fails; a line names the file, the object and the field (and no problem spans two lines)."""
    with pytest.raises(ValidationError) as e:
        planner.load("t.yaml", text=text)
    got = [str(p) for p in e.value.problems]
    assert all("\n" not in p and "\0" not in p for p in got), got
    field = field.encode("unicode_escape").decode() if not field.isprintable() else field
    hits = [p for p in got if p.startswith("t.yaml (document ") and f"): {obj}" in p and f": {field}: " in p]
    assert hits, got
    return hits[0]


def q(v: str) -> str:
    return json.dumps(v)  # a YAML double-quoted scalar holds every hostile value, NUL as \u0000


def pod(spec: str = "", name: str = "p", meta: str = "") -> str:
    return (f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}{meta}}}\n"
            f"spec: {{containers: [{{name: c, image: x}}]{spec}}}\n")


@pytest.mark.parametrize("kind", HOSTILE)
def test_sysctl_names(kind):
    key = "net.ipv4." + HOSTILE[kind]
    one_problem(CLUSTER + f"  nodeSettings: {{sysctls: {{{q(key)}: '1'}}}}\n", "Cluster t",
                f"spec.nodeSettings.sysctls[{key}]")


@pytest.mark.parametrize("kind", [k for k in HOSTILE if k != "dash"])  # -rf is written to /proc, never an argument
def test_sysctl_values(kind):
    one_problem(CLUSTER + f"  nodeSettings: {{sysctls: {{net.ipv4.tcp_fin_timeout: {q(HOSTILE[kind])}}}}}\n",
                "Cluster t", "spec.nodeSettings.sysctls[net.ipv4.tcp_fin_timeout]")


@pytest.mark.parametrize("kind", HOSTILE)
def test_pod_and_namespace_names(kind):
    v = HOSTILE[kind]
    one_problem(CLUSTER + pod(name=q(v)), "Pod", "metadata.name")
    one_problem(CLUSTER + f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {q(v)}}}\n", "Namespace",
                "metadata.name")


@pytest.mark.parametrize("kind", HOSTILE)
def test_resolv_conf_search_domains(kind):
    one_problem(CLUSTER + pod(f", dnsConfig: {{searches: [{q(HOSTILE[kind])}]}}"), "Pod p",
                "spec.dnsConfig.searches[0]")


@pytest.mark.parametrize("kind", ["newline", "nul", "long", "semicolon"])
def test_resolv_conf_options(kind):
    v = HOSTILE[kind]
    if kind == "semicolon":
        v = "ndots:1 rotate"  # a space would add another option to the line
    one_problem(CLUSTER + pod(f", dnsConfig: {{options: [{{name: ndots, value: {q(v)}}}]}}"), "Pod p",
                "spec.dnsConfig.options[0].value")
    one_problem(CLUSTER + pod(f", dnsConfig: {{options: [{{name: {q(v)}}}]}}"), "Pod p",
                "spec.dnsConfig.options[0].name")


def corefile(body: str) -> str:
    text = ".:53 {\n    errors\n" + body + "\n}\n"
    return (CLUSTER + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: coredns, namespace: kube-system}\n"
            f"data:\n  Corefile: {q(text)}\n")


@pytest.mark.parametrize("upstream", ["/etc/shadow", "$(id)", "a;b", "../../etc/passwd", "-rf", "dns.example.com"])
def test_corefile_forward_upstreams(upstream):
    msg = one_problem(corefile(f"    forward . {upstream}"), "ConfigMap kube-system/coredns", "data.Corefile")
    assert "forward" in msg


def test_corefile_server_port():
    text = CLUSTER + ("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: coredns, namespace: kube-system}\n"
                      'data:\n  Corefile: ".:99999 {\\n  errors\\n}\\n"\n')
    assert "from 1 to 65535" in one_problem(text, "ConfigMap kube-system/coredns", "data.Corefile")


@pytest.mark.parametrize("key", ["../x", "a b", "a\nb", "a;b"])
def test_configmap_keys(key):
    one_problem(CLUSTER + f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: m}}\ndata: {{{q(key)}: v}}\n",
                "ConfigMap m", f"data[{key}]")


NAD = ('---\napiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: macvlan}\n'
       'spec:\n  config: %s\n')


def nad_config(**extra: object) -> str:
    conf = {"cniVersion": "0.3.1", "type": "macvlan", "master": "eth0", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "192.168.1.0/24"}, **extra}
    return NAD % q(json.dumps(conf))


@pytest.mark.parametrize("kind", ["semicolon", "newline", "quote", "subshell", "dotdot", "nul"])
def test_secondary_interface_names(kind):
    ann = json.dumps([{"name": "macvlan", "interface": HOSTILE[kind][:15]}])
    text = CLUSTER + nad_config() + pod(meta=f", annotations: {{k8s.v1.cni.cncf.io/networks: {q(ann)}}}")
    one_problem(text, "Pod p", "metadata.annotations[k8s.v1.cni.cncf.io/networks]")


@pytest.mark.parametrize("kind", ["semicolon", "newline", "dotdot", "nul", "subshell"])
def test_nad_master_and_network_name(kind):
    one_problem(CLUSTER + nad_config(master=HOSTILE[kind][:15]), "NetworkAttachmentDefinition macvlan",
                "spec.config.master")
    one_problem(CLUSTER + nad_config(name=HOSTILE[kind]), "NetworkAttachmentDefinition macvlan",
                "spec.config.name")


@pytest.mark.parametrize("conf, words", [
    ({"cniVersion": "1.0.0", "name": "../../etc", "plugins": [{"type": "ptp"}]}, '"name"'),
    ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": ".."}]}, "not a plugin file name"),
    ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "-h"}]}, "not a plugin file name"),
    ({"cniVersion": "1.0.0", "name": "n\n", "plugins": [{"type": "ptp"}]}, '"name"'),
])
def test_conflist_names_and_plugin_types(tmp_path, conf, words):
    f = tmp_path / "x.conflist"
    f.write_text(json.dumps(conf))
    problem = cni_config.check_file(str(f))
    assert problem is not None and words in problem


@pytest.mark.parametrize("kind", ["semicolon", "newline", "quote", "subshell", "dash", "long"])
def test_service_names_reach_rule_comments_only_as_dns_labels(kind):
    v = HOSTILE[kind]
    one_problem(CLUSTER + f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {q(v)}}}\n"
                "spec: {ports: [{port: 80}]}\n", "Service", "metadata.name")
    one_problem(CLUSTER + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                f"spec: {{ports: [{{port: 80, name: {q(v)}}}, {{port: 81, name: b}}]}}\n", "Service s",
                "spec.ports[0].name")


@pytest.mark.parametrize("kind", ["semicolon", "newline", "quote", "subshell", "dash", "long"])
def test_network_policy_names_reach_rule_comments_only_as_dns_subdomains(kind):
    one_problem(CLUSTER + "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                f"metadata: {{name: {q(HOSTILE[kind])}}}\nspec: {{podSelector: {{}}}}\n", "NetworkPolicy",
                "metadata.name")


@pytest.mark.parametrize("kind", ["semicolon", "newline", "quote", "subshell", "nul", "long"])
def test_label_values_and_keys(kind):
    v = HOSTILE[kind]
    one_problem(CLUSTER + pod(meta=f", labels: {{app: {q(v)}}}"), "Pod p", "metadata.labels[app]")
    one_problem(CLUSTER + pod(meta=f", labels: {{{q(v)}: x}}"), "Pod p", f"metadata.labels[{v}]")
