"""Relocation of a weakly placed frame by PnP on a stored keyframe (``align.loops.LoopDetector``).

A frame its window model held on few triangulated points (the photo that closes a loop) is placed
less reliably than PnP on an earlier keyframe's points places it, however small the disagreement,
unless the keyframe is far enough back for a loop: then the loop corrects the whole window."""

import numpy as np
import pytest

from align.config import LoopClosureConfig
from align.loops import LoopDetector
from align.placerec import KeyframeDatabase
from align.pnp import pose_change
from align.reattach import lift_keyframe
from align.synthetic import layered_room

W, H = 320, 240


@pytest.fixture(scope="module")
def revisit():
    """Frame 0 (stored, window 0) and frame 30 (window 1), which sees the same place from 2 degrees on."""
    from stream4d.synthetic import intrinsics_for, make_trajectory, render_view

    scene, _ = layered_room(5)
    c2w = make_trajectory("orbit", 2, seed=5, scene=scene, arc_deg=2)
    K = intrinsics_for(W, H, fov_deg=60)
    views = [render_view(scene, c2w[i], K, W, H, index=i) for i in range(2)]
    return views, c2w, K


def _turned(c2w: np.ndarray, degrees: float, shift: float) -> np.ndarray:
    a = np.radians(degrees)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    out = c2w.copy()
    out[:3, :3] = R @ c2w[:3, :3]
    out[:3, 3] += shift * c2w[:3, 0]
    return out


def _detect(revisit, placed: np.ndarray, weak: bool, window: int = 1, stored_in=(0,), depth_noise: float = 0.0):
    """Relocations of frame 30 (``placed``; its depth times lognormal ``depth_noise``) queried in ``window``
    against frame 0 stored in each window of ``stored_in`` (as frames 0, 8, ...); with a window far enough
    back for a loop, also the loops."""
    views, c2w, K = revisit
    cfg = LoopClosureConfig()
    database = KeyframeDatabase(vocabulary_size=8, vocabulary_samples=2000)
    stored = views[0]
    for n, w in enumerate(stored_in):
        database.add(w, 0, lift_keyframe(stored.rgb, stored.depth, stored.depth > 0, K, c2w[0], 8 * n, 2000),
                     c2w[0], K)
    query = views[1]
    noise = np.exp(np.random.default_rng(0).normal(0.0, depth_noise, query.depth.shape)).astype(np.float32)
    kf = lift_keyframe(query.rgb, query.depth * noise, query.depth > 0, K, placed, 30, 2000)
    detector = LoopDetector(database, min_window_gap=cfg.min_window_gap, min_frame_gap=cfg.min_frame_gap,
                            relocate_min_deg=cfg.relocate_min_deg, relocate_min_shift=cfg.relocate_min_shift)
    loops, _, relocations, _ = detector.detect(window, 0, [(kf, placed, K)], frozenset({30}) if weak else frozenset())
    return relocations if window == 1 else (relocations, loops)


@pytest.mark.parametrize("degrees, shift", [(1.5, 0.0), (0.0, 0.05), (4.0, 0.1)])
def test_a_weak_frame_takes_the_pnp_pose_even_when_its_window_was_only_a_little_off(revisit, degrees, shift):
    _, c2w, _ = revisit
    placed = _turned(c2w[1], degrees, shift)  # where its window put it; the scene is about 3 units deep
    relocations = _detect(revisit, placed, weak=True)
    assert len(relocations) == 1 and relocations[0].frame_index == 30 and relocations[0].match_frame == 0
    angle, distance = pose_change(relocations[0].c2w, c2w[1])
    assert angle < 0.2 and distance < 0.01, (angle, distance)


def test_a_frame_its_window_held_well_is_not_relocated(revisit):
    _, c2w, _ = revisit
    assert _detect(revisit, _turned(c2w[1], 1.5, 0.0), weak=False) == []



def test_a_weak_frame_a_little_off_in_a_loop_keeps_its_loop(revisit):
    """Matched in a window far enough back for a loop, a weak frame 1.5 degrees off is not relocated: its
    loop goes to the pose graph, which corrects its whole window rather than one frame of it."""
    _, c2w, _ = revisit
    relocations, loops = _detect(revisit, _turned(c2w[1], 1.5, 0.0), weak=True, window=5)
    assert relocations == [] and [(m.query_frame, m.match_frame) for m in loops] == [(30, 0)]
    relocations, loops = _detect(revisit, _turned(c2w[1], 8.0, 0.0), weak=True, window=5)
    assert [r.frame_index for r in relocations] == [30] and loops == []  # grossly off: relocated, no loop


def test_a_weak_frame_whose_broken_depth_fails_its_loop_is_still_relocated(revisit):
    """Far enough back for a loop, but its own depth is broken (the 3D-3D test fails), so no loop will
    correct it: then PnP's pose replaces the window's, however small the difference."""
    _, c2w, _ = revisit
    relocations, loops = _detect(revisit, _turned(c2w[1], 1.5, 0.0), weak=True, window=5, depth_noise=0.5)
    assert [r.frame_index for r in relocations] == [30] and loops == []


def test_a_near_match_does_not_take_the_loop_of_a_frame_a_little_off(revisit):
    """The same place stored by a window far back (a loop) and by a near one (no loop): the near match
    would relocate the frame, but its loop corrects the whole window, so the loop stays."""
    _, c2w, _ = revisit
    relocations, loops = _detect(revisit, _turned(c2w[1], 1.5, 0.0), weak=True, window=5, stored_in=(0, 4))
    assert relocations == [] and [(m.query_frame, m.match_window) for m in loops] == [(30, 0)]
