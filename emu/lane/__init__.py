"""The kernel lane: a stock Debian kernel in QEMU for the features this host's kernel lacks.

`host` (the tools, the cache, LaneError) -> `kconfig` (a kernel's config and features) -> `kernels` (the kernel,
fetched or given by path) -> `guest` (what runs in the guest and its console) -> `initramfs`, `bootimage` (what QEMU
boots) -> `vm` (boot the VM and run a command in it).  The lane imports only emu.errors and itself; only the cli
uses it."""
