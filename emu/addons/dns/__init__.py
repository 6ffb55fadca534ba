"""Cluster DNS: CoreDNS's kubernetes plugin as a per-cluster daemon (server), its records built from the model
(records), the Corefile (corefile), kubelet's resolv.conf (resolvconf), and the addon wiring (addon)."""
