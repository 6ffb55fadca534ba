"""Composition and lifecycle: up, converge and down as loops over the networks and addons."""
