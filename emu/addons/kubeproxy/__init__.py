"""kube-proxy, as data: what each proxier mode programs on a node for the Services and endpoints it sees.

`model` holds the proxier's view (service ports, endpoints, the node), `iptables` and `nftables` compute the rule
text kube-proxy would write (pure), and `sync` writes it into a node namespace with the real tools.
"""
