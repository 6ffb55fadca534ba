"""Multus as an Addon: NetworkAttachmentDefinitions and the secondary networks pods ask for
(k8s.v1.cni.cncf.io/networks).

Multus is a CNI meta-plugin: the container runtime calls it, and it calls the delegates.  So its wiring is done
where pods are wired, by the pod network (emu.network.*: emu.addons.multus.wire for built-in secondary networks,
the real plugins for `plugin: cni`), and its addresses are allocated with the pods' (emu.addons.multus.allocate).
As an addon it declares the kind it reads; it runs nothing of its own and owns nothing in the record.
"""
from __future__ import annotations

from emu.addons.base import Addon

MULTUS = Addon("multus", kinds=("NetworkAttachmentDefinition",))
