"""`emu doctor`: the troubleshooting checklist run against a live cluster, each finding with its evidence.

The checks are pure functions of the plan, the model and what was read back (`checks`, `state`, `mtu`,
`rulesets`); `gather` is the only module that reads the kernel or sends probes, behind the `Kernel` protocol;
`run` orchestrates; `render` prints."""
