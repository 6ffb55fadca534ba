"""Multus: NetworkAttachmentDefinitions and secondary networks, one module per layer: `nad` (model: the NAD kind and
the pods' networks annotation), `allocate` (alloc: the addresses host-local or static give), `wire` (the interfaces,
built in or by the real plugins)."""
