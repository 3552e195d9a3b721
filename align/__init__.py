"""align: place each window's prediction in one world frame.

Robust Sim(3) registration on the frames consecutive windows share, then
LASER's layer-wise depth scale alignment (arXiv 2512.13680); a keyframe
database, loop closure and a Sim(3) pose graph over windows keep the stream
in one world (``align.globalmap``). Input
``WindowPrediction``, output ``AlignedWindow`` (``stream4d.contracts``).
A window whose model output is unusable is refused (``UnusableWindowError``,
``align.validate``) without disturbing the stream.
"""

from stream4d.lazy import lazy_exports

__all__ = ["AlignConfig", "AlignmentError", "AlignmentWorker", "StreamAligner", "UnusableWindowError"]
__getattr__ = lazy_exports(__name__, {
    "AlignConfig": "align.config",
    "AlignmentError": "align.aligner",
    "AlignmentWorker": "align.worker",
    "StreamAligner": "align.aligner",
    "UnusableWindowError": "align.aligner",
})
