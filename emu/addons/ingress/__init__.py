"""Ingress (networking.k8s.io/v1) served by a real nginx configured the way ingress-nginx configures it."""
