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

from align.windows import sliding_windows
from stream4d.pipeline.config import ReconstructConfig, load_config
from stream4d.pipeline.reading import read_ahead
from stream4d.pipeline.run import RunSummary, reconstruct
from stream4d.pipeline.stages import build_model, open_input

__all__ = ["ReconstructConfig", "RunSummary", "build_model", "load_config", "open_input", "read_ahead",
           "reconstruct", "sliding_windows"]
