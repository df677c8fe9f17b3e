"""Wire formats <-> numpy, nothing else: no model lookup, no HTTP (MLServer's codec split)."""
