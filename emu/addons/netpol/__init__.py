"""NetworkPolicy (networking.k8s.io/v1): parsed into typed data, decided by a pure engine, and enforced on every
node the way kube-router's network policy controller enforces it beside flannel.

    model     the typed policy objects (selectors, peers, ports, rules), after the API server's defaulting
    parse     manifests -> model, every problem naming file, document, object and field
    engine    pure: is (src, dst, port, protocol) allowed, which rule allows it or why nothing does
    resolve   pure: policies resolved against pods and namespaces into kube-router's networkPolicyInfo
    names     kube-router's chain and ipset names (sha256, base32, 16 characters)
    rules     pure: one node's ipsets and filter table, as kube-router's iptables controller writes them
    sync      side effects: `ipset restore` and `iptables-restore --noflush` inside each node's namespace
    explain   `emu explain` and the expected-versus-observed matrix, rendered

Importing this package imports nothing heavy: `emu.model.types` refers to the policy types for typing only.
"""
