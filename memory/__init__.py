"""Bounded memory for endless streams.

- ``memory.gaussians``: the Gaussian-splat geometry cache.
- ``memory.kv_pruning``: InfiniteVGGT's KV pruning policy (key-diversity
  scores, per-head selection, adaptive layer budgets) as plain functions.
- ``memory.kv_cache``: ``PrunedKVCache``, the bounded streaming KV cache.
- ``memory.vggt_stream``: ``load_vggt_backend``, the VGGT window model wired
  to that cache (recon itself never imports memory).
"""
