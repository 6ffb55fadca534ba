"""`emu trace`, `emu capture`, traceroute and fragmentation details: one packet followed hop by hop through the
emulated dataplane, from the kernel's own evidence (AF_PACKET taps in every namespace, nftables rule tracing).

Modules, one job each: capture (taps), decode (headers), correlate (which frames are the flow's packets), nftrace
(rule tracing) and ruletext (rule texts), routes (routing decisions), assemble and diagnose (the report), render /
pcap / svg (outputs), run (orchestration), traceroute, fragments, tcpdump (`emu capture`).
"""
from __future__ import annotations

from emu.observe.trace.run import capture, report, trace

__all__ = ["capture", "report", "trace"]
