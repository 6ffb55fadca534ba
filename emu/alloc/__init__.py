"""The alloc layer (pure): IPAM, Service IPs and EndpointSlices, computed from the model."""
