"""Depth maps of tracked frames projected from their keyframes' depth (recon.tracked_depth), on exact
renders: the keyframes' true depth in, the tracked frame's true depth out."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from recon.tracked_depth import KeyframeCloud, TrackedDepthConfig, depth_from_keyframes, enough_depth, lift_keyframe
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

W, H = 256, 192


@lru_cache(maxsize=None)
def _views(kind: str, **kw):
    """Frames 0, 6 and 12 of a 90-frame path through the room: (c2w [90, 4, 4], K, {i: view})."""
    scene = make_scene("room", seed=0)
    K = intrinsics_for(W, H)
    c2w = make_trajectory(kind, 90, seed=0, scene=scene, **kw)
    return c2w, K, {i: render_view(scene, c2w[i], K, W, H) for i in (0, 6, 12)}


def _clouds(views, K, c2w, cfg, conf=None) -> list[KeyframeCloud]:
    return [lift_keyframe(i, views[i].depth, (views[i].depth > 0).astype(np.float32) if conf is None else conf[i],
                          K, c2w[i], cfg.step) for i in (0, 12)]


@pytest.mark.parametrize("kind,kw", [("orbit", {"arc_deg": 20.0}), ("forward", {"step": 0.01}),
                                     ("sideways", {"step": 0.01})])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_a_frame_between_two_keyframes_gets_their_depth_where_it_is(kind, kw, scale):
    c2w, K, views = _views(kind, **kw)
    cfg = TrackedDepthConfig(scale=scale)
    clouds = _clouds(views, K, c2w, cfg)
    got = depth_from_keyframes(clouds, K, c2w[6], (W, H), cfg)
    truth = views[6].depth
    assert got.depth.shape == (H, W) and got.depth.dtype == np.float32 and got.conf.dtype == np.float32
    assert got.sources == (0, 12)
    valid = got.depth > 0
    assert got.valid_share == pytest.approx(valid.mean()) and got.valid_share > 0.97
    assert (got.conf[valid] > 0).all() and (got.conf[~valid] == 0).all()
    rel = np.abs(got.depth[valid] - truth[valid]) / truth[valid]
    assert np.median(rel) < (0.002 if scale == 1 else 0.005), np.median(rel)
    assert rel.mean() < 0.015 and (rel > 0.05).mean() < 0.02
    assert enough_depth(got, clouds, cfg)


def test_pixels_both_keyframes_agree_on_are_more_confident_than_pixels_one_sees():
    c2w, K, views = _views("sideways", step=0.01)
    cfg = TrackedDepthConfig(scale=1.0)
    both = depth_from_keyframes(_clouds(views, K, c2w, cfg), K, c2w[6], (W, H), cfg)
    one = depth_from_keyframes(_clouds(views, K, c2w, cfg)[:1], K, c2w[6], (W, H), cfg)
    seen = (both.depth > 0) & (one.depth > 0)
    assert np.median(both.conf[seen]) == pytest.approx(1.0) and np.median(one.conf[seen]) == pytest.approx(0.5)
    assert one.sources == (0,)


def test_pixels_nobody_sees_have_depth_and_confidence_zero():
    c2w, K, views = _views("sideways", step=0.01)
    cfg = TrackedDepthConfig()
    # The keyframes know depth only in the left half of their images.
    conf = {i: np.zeros((H, W), np.float32) for i in (0, 12)}
    for i in conf:
        conf[i][:, : W // 2] = 1.0
    clouds = _clouds(views, K, c2w, cfg, conf)
    got = depth_from_keyframes(clouds, K, c2w[6], (W, H), cfg)
    assert (got.depth[:, int(0.75 * W):] == 0).all() and (got.conf[:, int(0.75 * W):] == 0).all()
    assert 0.3 < got.valid_share < 0.7
    assert enough_depth(got, clouds, cfg)  # as much as its keyframes have


def test_keyframes_without_depth_give_an_empty_map_that_does_not_count():
    c2w, K, views = _views("orbit", arc_deg=20.0)
    cfg = TrackedDepthConfig()
    zero = {i: np.zeros((H, W), np.float32) for i in (0, 12)}  # rotation-only views: confidence 0
    clouds = _clouds(views, K, c2w, cfg, zero)
    assert all(len(c.points) == 0 and c.valid_share == 0 for c in clouds)
    got = depth_from_keyframes(clouds, K, c2w[6], (W, H), cfg)
    assert got.valid_share == 0 and not got.depth.any() and not got.conf.any() and got.sources == ()
    assert not enough_depth(got, clouds, cfg)


def test_a_camera_facing_away_sees_nothing():
    c2w, K, views = _views("orbit", arc_deg=20.0)
    cfg = TrackedDepthConfig()
    away = c2w[6].copy()
    away[:3, :3] = away[:3, :3] @ np.diag([-1.0, 1.0, -1.0])  # turned 180 degrees about its y axis
    clouds = _clouds(views, K, c2w, cfg)
    got = depth_from_keyframes(clouds, K, away, (W, H), cfg)
    assert got.valid_share < 0.05 and not enough_depth(got, clouds, cfg)


def test_config_rejects_bad_values():
    for bad in ({"scale": 0.3}, {"scale": 0.0}, {"agree": 0.0}, {"fill_neighbours": 9}, {"min_coverage": 1.5},
                {"enabled": "yes"}):
        with pytest.raises(ValueError):
            TrackedDepthConfig(**bad)
    assert TrackedDepthConfig(scale=0.25).step == 4
