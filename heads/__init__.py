"""Shipped head checkpoints and `registry.json` (installed as `autodeco_lp.shipped_heads`).

Each registry entry maps a base model id to heads: a Hub repo id, or, with `"local": true`, a
folder next to this file. `autodeco_lp.hub.registry` reads it.
"""
