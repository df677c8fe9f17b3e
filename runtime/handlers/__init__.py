"""HTTP handlers: they speak the protocols and call codecs, the repository and the batcher."""
