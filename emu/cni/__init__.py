"""emu as a CNI runtime: real plugin binaries (a conflist) wire the pods, the way containerd's CRI plugin calls them.

`runtime` is the CNI specification's runtime side (environment, stdin, prevResult chaining, result cache, log);
`config` loads and templates network configuration lists; `pods` ties them to a cluster's record."""
