"""The orchestration (the roof): a streaming run from input to output folder.

    from stream4d.pipeline import ReconstructConfig, reconstruct

- ``config``: ``ReconstructConfig``, the one configuration tree (stage configs nested), and
  ``load_config`` (a run.json's ``"config"``, or the tree itself).
- ``stages``: the stages built from it (input, window model, aligner, observers).
- ``vggt_stream``: the VGGT window model wired to the pruned KV cache of ``memory``.
- ``reading``: frames decoded ahead, cut into sliding windows.
- ``sink``: aligned windows into the output folder, the splat cache and the observers.
- ``run``: ``reconstruct`` (open, stream, close, record) and its ``RunSummary``.

The stages (recon, memory, align, viz) never import this package; the server and the CLI do.
"""

from stream4d.lazy import lazy_exports

__all__ = ["ReconstructConfig", "RunSummary", "build_model", "load_config", "open_input", "read_ahead", "reconstruct", "sliding_windows"]
__getattr__ = lazy_exports(__name__, {
    "ReconstructConfig": "stream4d.pipeline.config",
    "RunSummary": "stream4d.pipeline.run",
    "build_model": "stream4d.pipeline.stages",
    "load_config": "stream4d.pipeline.config",
    "open_input": "stream4d.pipeline.stages",
    "read_ahead": "stream4d.pipeline.reading",
    "reconstruct": "stream4d.pipeline.run",
    "sliding_windows": "align.windows",
})
