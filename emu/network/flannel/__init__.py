"""Flannel: vxlan and host-gw, as flanneld and its bridge delegate program them."""
