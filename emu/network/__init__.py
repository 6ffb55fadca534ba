"""Pod networks (the PodNetwork seam): how pods and nodes are wired, one folder per dataplane."""
