"""Bounded memory for endless streams.

- ``memory.gaussians``: the Gaussian-splat geometry cache.
- ``memory.kv_pruning``: InfiniteVGGT's KV pruning policy (key-diversity
  scores, per-head selection, adaptive layer budgets) as plain functions.
- ``memory.kv_cache``: ``PrunedKVCache``, the bounded streaming KV cache; the
  orchestration wires it into the VGGT window model
  (``stream4d.pipeline.vggt_stream.load_vggt_backend``; recon never imports memory).
"""
