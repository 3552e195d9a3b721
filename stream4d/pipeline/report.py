"""What a finished run tells its user: the warnings in run.json and the CLI's summary line.

A run can finish without an error and still be of little use: every frame posed
rotation-only (no parallax, so no depth and an empty map), or windows skipped
because the model's output was unusable. These say so in plain words.
"""

from __future__ import annotations

from stream4d.contracts import StreamStats


def run_warnings(stats: StreamStats, map_points: int, map_kept: bool = True) -> list[str]:
    """Warnings for run.json's ``stats.warnings`` and the CLI; ``map_points``: points in points.ply.

    ``map_kept`` False (no Gaussian cache) still writes points.ply from the fused point maps.
    """
    out = []
    if stats.frames_posed == 0:
        out.append(f"no frame was posed ({stats.frames_received} received, {stats.windows_skipped} windows "
                   "skipped): the output folder holds no poses")
    elif map_points == 0:
        between = stats.frames_interpolated  # between rotation-only keyframes (no points to track against)
        if stats.frames_rotation_only == stats.frames_posed - between:
            rest = f", the {between} frames between them interpolated" if between else ""
            why = (f"no window had parallax: all {stats.frames_rotation_only} posed "
                   f"{'keyframes' if between else 'frames'} are rotation-only{rest} "
                   "(static camera or pure rotation), so no depth was triangulated")
        else:
            why = "no window gave confident depth"
        files = "points.ply and splats.ply are" if map_kept else "points.ply is"
        out.append(f"map is empty: {why}; {files} empty")
    if stats.windows_skipped:
        out.append(f"{stats.windows_skipped} window{' was' if stats.windows_skipped == 1 else 's were'} skipped "
                   "as unusable (run.json skipped_windows); frames no other window covered are not posed")
    return out


def pose_summary(stats: StreamStats) -> str:
    """``"567 frames: 540 posed with depth, 27 rotation-only, 0 not posed"`` (+ skipped frames/windows);
    with keyframes, ``"567 frames, 80 keyframes: 556 posed with depth (478 from keyframes' depth),
    2 rotation-only, 480 tracked, 7 interpolated, 0 not posed"``: tracked frames are counted with
    depth when their keyframes' depth projected into them covers enough of them (``recon.tracked_depth``);
    keyframes whose depth is only their window's triangulated points (views too far apart for optical
    flow) are said apart the same way."""
    unposed = max(0, stats.frames_processed - stats.frames_posed)
    notes = []
    if stats.frames_tracked_with_depth:
        notes.append(f"{stats.frames_tracked_with_depth} from keyframes' depth")
    if stats.frames_depth_from_tracks:
        notes.append(f"{stats.frames_depth_from_tracks} only at their tracked points: too far apart for flow")
    derived = f" ({'; '.join(notes)})" if notes else ""
    parts = [f"{stats.frames_with_depth()} posed with depth{derived}"]
    if stats.frames_without_depth:
        parts.append(f"{stats.frames_without_depth} posed without confident depth")
    parts.append(f"{stats.frames_rotation_only} rotation-only")
    if stats.frames_keyframes < stats.frames_processed:  # some frames were not keyframes
        parts += [f"{stats.frames_tracked} tracked", f"{stats.frames_interpolated} interpolated"]
    parts.append(f"{unposed} not posed")
    if stats.frames_skipped:
        parts.append(f"{stats.frames_skipped} skipped as unusable images")
    keys = f", {stats.frames_keyframes} keyframes" if stats.frames_keyframes < stats.frames_processed else ""
    text = f"{stats.frames_received} frames{keys}: " + ", ".join(parts)
    windows = f"{stats.windows} window{'' if stats.windows == 1 else 's'}"
    if stats.windows_skipped:
        windows += f" ({stats.windows_skipped} more skipped as unusable)"
    return f"{text}; {windows}"
