"""The contract both stages stand on: the bundle manifest, the V2 datatype table, the image layout
guess, and fetching and unpacking artifacts safely.

``convert/`` writes bundles and ``runtime/`` (and ``score/``) read them; each imports from here and
never from the other. Only the standard library and numpy are imported at module level, so the
serving image pulls nothing heavy through this package.
"""
