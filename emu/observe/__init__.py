"""Observers: the agent, probes, trace, doctor and readback of kernel state."""
