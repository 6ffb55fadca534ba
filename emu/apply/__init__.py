"""The apply layer: the only generic side effects (namespaces, netlink batches, tables, daemons, files, the record)."""
