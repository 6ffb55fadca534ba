"""emu as a CNI runtime: real plugin binaries (a conflist) wire the pods, the way containerd's CRI plugin calls them.

`network` is the cni PodNetwork (emu.network.base); `netconf` (a network configuration list as data) and `config`
(loading and templating conflists, flannel's delegate) are pure, so `spec`, the topology schema, checks a conflist
in the model layer; `runtime` is the CNI specification's runtime side (environment, stdin, prevResult chaining,
result cache, log); `capabilities` is the runtimeConfig offered per attachment (portMappings, bandwidth, ips, mac);
`pods` ties them to a cluster's record; `nodes` plans a node before any plugin runs; `dryrun` renders the calls
`up --dry-run` shows."""
