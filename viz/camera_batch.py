"""The cheap part of an aligned window: the new cameras, without pixels or point maps.

When the viewer falls behind, a queued window is reduced to this so the
trajectory and the one-camera-per-posed-frame guarantee survive the drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream4d.contracts import AlignedWindow, Reattachment


@dataclass
class CameraBatch:
    frame_indices: np.ndarray  # int64 [N]
    timestamps: np.ndarray  # float64 [N]
    c2w: np.ndarray  # float64 [N, 4, 4] world frame
    K: np.ndarray  # float64 [N, 3, 3] model pixels
    sizes: np.ndarray  # int64 [N, 2] (W, H) of the model image
    segments: np.ndarray  # int64 [N]
    # One row per window: (window index, its last frame index, that frame's timestamp, sim3 scale).
    window_scales: np.ndarray  # float64 [M, 4]
    # Segments found again in an earlier world, applied before these cameras (which are already there).
    reattachments: tuple[Reattachment, ...] = field(default_factory=tuple)

    @staticmethod
    def from_window(window: AlignedWindow) -> "CameraBatch":
        pred = window.prediction
        new = np.flatnonzero(np.asarray(window.is_new, dtype=bool))
        n = new.size
        W, H = pred.model_size
        if pred.num_frames:  # plotted at the window's last view, even when it brought no new one
            last = (window.window_index, pred.frame_indices[-1], pred.timestamps[-1], window.sim3_scale)
            scales = np.array([last], dtype=np.float64)
        else:
            scales = np.zeros((0, 4))
        return CameraBatch(
            frame_indices=pred.frame_indices[new].astype(np.int64),
            timestamps=pred.timestamps[new].astype(np.float64),
            c2w=pred.c2w[new].astype(np.float64),
            K=pred.K[new].astype(np.float64),
            sizes=np.tile(np.array([W, H], dtype=np.int64), (n, 1)),
            segments=np.full(n, window.segment, dtype=np.int64),
            window_scales=scales,
            reattachments=() if window.reattached is None else (window.reattached,),
        )

    @staticmethod
    def concat(first: "CameraBatch", second: "CameraBatch") -> "CameraBatch":
        """One batch of both; ``first``'s cameras are mapped by ``second``'s re-attachments so every
        re-attachment of the result can be applied before all of its cameras."""
        c2w, segments = first.c2w.copy(), first.segments.copy()
        for link in second.reattachments:
            moved = segments == link.from_segment
            c2w[moved] = link.sim3.apply_c2w(c2w[moved])
            segments[moved] = link.to_segment
        first = CameraBatch(first.frame_indices, first.timestamps, c2w, first.K, first.sizes, segments,
                            first.window_scales, first.reattachments)
        return CameraBatch(**{
            name: np.concatenate([getattr(first, name), getattr(second, name)])
            for name in ("frame_indices", "timestamps", "c2w", "K", "sizes", "segments", "window_scales")
        }, reattachments=first.reattachments + second.reattachments)

    def __len__(self) -> int:
        return int(self.frame_indices.size)
