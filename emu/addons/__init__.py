"""Cluster components (the Addon seam): kube-proxy, NetworkPolicy, DNS, Ingress, Multus, one folder each."""
