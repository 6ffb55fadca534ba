"""kube-proxy: what each proxier mode programs on a node for the Services and endpoints it sees (the Proxier seam).

From the data to the kernel:

  model, inputs        the proxier's view of a node: service ports and their endpoints (alloc layer)
  iptables, iptables_rules, iptables_text      iptables mode: chains and jumps, one service's rules, the restore text
  nftables, nftables_sync                      nftables mode: names and the transaction's form, one sync
  ipvs_names, ipvs_rules, ipvs_desired         ipvs mode: names, its iptables part, the desired state
  modes                the modes as one pure table: name, node sysctls, `render`, what doctor and trace need
  proxiers             the Proxier seam, `PROXIERS`: each mode with its drivers (preflight, sync, cleanup, read back)
  ipvs                 ipvs mode's driver: netlink, `ipset restore`, `iptables-restore` inside a node
  sync                 the sync loop over the nodes, conntrack cleanup and the kube-proxy log
  desired              every node's first sync as plan objects (`emu up --dry-run`)
  systempods           the kube-proxy pods `emu get pods` lists

The modules up to `modes` are pure (no subprocess, no kernel access).
"""
