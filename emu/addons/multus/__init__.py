"""Multus: NetworkAttachmentDefinitions and secondary networks."""
