"""emu as a CNI runtime: real plugin binaries (a conflist) wire the pods, the way containerd's CRI plugin calls them.

`runtime` is the CNI specification's runtime side (environment, stdin, prevResult chaining, result cache, log);
`config` loads and templates network configuration lists; `capabilities` is the runtimeConfig offered per
attachment (portMappings, bandwidth, ips, mac); `pods` ties them to a cluster's record; `dryrun` renders the calls
`up --dry-run` shows."""
