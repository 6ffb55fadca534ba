"""Observers: probes (real packets, path MTU), trace, doctor and readback of kernel state.  The agent that answers
the probes is started with the cluster: emu.cluster.agent."""
