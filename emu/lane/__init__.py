"""The kernel lane: a stock Debian kernel in QEMU for the features this host's kernel lacks."""
