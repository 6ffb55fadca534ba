"""The agent: one process per cluster serving every pod's TCP, UDP and SCTP ports from sockets opened inside each
pod's namespace.  `client` starts, syncs and stops it; `daemon` is the process (`python -m emu.cluster.agent`),
`server` its loop, `sockets` the sockets in the pods' namespaces, `protocol` the files and the answers both sides
agree on."""
