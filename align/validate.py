"""Is a window model's output usable at all? Checked before a window is aligned.

A window model can fail on hard input (too few features, a degenerate bundle
adjustment) and still return a prediction: non-finite poses or intrinsics, or
no usable depth. Such a window cannot be placed in the world; the aligner
refuses it with :class:`UnusableWindowError` and keeps its state, so the stream
goes on with the next window (see ``align.worker``).

A window without any usable depth is not refused: its poses are still the
model's, only nothing could be triangulated. The model may flag it
(``WindowPrediction.rotation_only``); the aligner also marks every view of a
window without a single usable depth pixel and without triangulated sparse
tracks rotation-only (``info["no_parallax"]``).
"""

from __future__ import annotations

import numpy as np

from stream4d.contracts import WindowPrediction


def unusable_reason(pred: WindowPrediction) -> str | None:
    """Why ``pred`` cannot be aligned, or None when it can.

    Unusable: a non-finite camera pose (c2w), a c2w whose rotation block is not a
    rotation, intrinsics with a non-finite or non-positive focal length, or depth
    that is non-finite wherever it is confident (or everywhere). Isolated
    non-finite pixels are not a reason: the aligner ignores them.
    """
    if not np.all(np.isfinite(pred.c2w)):
        bad = np.flatnonzero(~np.isfinite(pred.c2w).all(axis=(1, 2)))
        return f"has non-finite camera poses (c2w) for frames {pred.frame_indices[bad].tolist()}"
    if not np.all(np.linalg.det(pred.c2w[:, :3, :3]) > 0.5):
        return "has a c2w whose rotation block is not a rotation (det <= 0.5)"
    if not np.all(np.isfinite(pred.K)) or not np.all(pred.K[:, [0, 1], [0, 1]] > 0):
        return "has intrinsics K with a non-finite or non-positive focal length"
    finite = np.isfinite(pred.depth)
    confident = np.isfinite(pred.depth_conf) & (pred.depth_conf > 0)
    if not finite.any() or (confident.any() and not (finite & confident).any()):
        return "has non-finite depth wherever it is confident"
    return None
