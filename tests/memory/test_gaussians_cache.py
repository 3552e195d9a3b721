"""The Gaussian cache on exact synthetic views: held-out renders, merging, the size bound, the contracts."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from memory.gaussians import GaussianCache, GaussianCacheConfig
from stream4d.contracts import AlignedWindow, GaussianSnapshot, Reattachment, WindowPrediction
from stream4d.geometry import Sim3, unproject_depth
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence

W, H = 128, 96
HOLD_OUT = 5  # every 5th view (offset 2) is held out


@pytest.fixture(scope="module")
def sweep():
    """A slow sideways walk past the synthetic room: 30 views, 5 cm apart, exact depth."""
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("sideways", 30, seed=0, scene=scene)
    return list(render_sequence(scene, c2w, intrinsics_for(W, H, 60), W, H, fps=10.0))


def split(views):
    train = [v for i, v in enumerate(views) if i % HOLD_OUT != 2]
    held = [v for i, v in enumerate(views) if i % HOLD_OUT == 2]
    return train, held


def fill(cache: GaussianCache, views) -> list[dict]:
    return [cache.add_view(v.rgb, v.depth, None, None, v.c2w, v.K, v.timestamp) for v in views]


@pytest.fixture(scope="module")
def sweep_cache(sweep):
    cache = GaussianCache()
    train, _ = split(sweep)
    counts = fill(cache, train)
    return cache, counts


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_held_out_views_of_a_sideways_sweep_render_above_25db_with_depth_absrel_under_5_percent(sweep, sweep_cache):
    cache, _ = sweep_cache
    _, held = split(sweep)
    for v in held:
        rgb, depth, alpha = cache.render(v.c2w, v.K, W, H)
        assert rgb.shape == (H, W, 3) and depth.shape == alpha.shape == (H, W)
        assert psnr(rgb, v.rgb / 255.0) >= 25.0
        scored = (v.depth > 0) & (alpha > 0.5)
        assert scored.sum() >= 0.95 * (v.depth > 0).sum()  # the cache covers the held-out view
        abs_rel = np.mean(np.abs(depth[scored] - v.depth[scored]) / v.depth[scored])
        assert abs_rel <= 0.05


def test_merging_keeps_the_count_under_30_percent_of_raw_pixels_on_a_slow_sweep(sweep, sweep_cache):
    cache, counts = sweep_cache
    train, _ = split(sweep)
    raw = sum(int((v.depth > 0).sum()) for v in train)
    assert len(cache) <= 0.3 * raw
    # After the first view most pixels fuse into Gaussians that are already there.
    later = counts[1:]
    assert sum(c["merged"] + c["covered"] for c in later) > 10 * sum(c["added"] for c in later)


def test_cap_evicts_old_and_unconfirmed_gaussians_and_memory_stops_growing(sweep):
    cap = 15000
    cache = GaussianCache(GaussianCacheConfig(max_gaussians=cap, evict_to_fraction=0.9))
    train, _ = split(sweep)
    sizes, nbytes, evicted = [], [], 0
    for v in train + train[::-1]:  # walk there and back
        evicted += cache.add_view(v.rgb, v.depth, None, None, v.c2w, v.K, v.timestamp)["evicted"]
        sizes.append(cache.num_static)
        nbytes.append(cache.nbytes())
    assert max(sizes) <= cap and evicted > 0
    assert nbytes[-1] == max(nbytes[len(nbytes) // 2:])  # the columns stopped growing
    # What the camera sees now is kept: the last view renders back.
    v = train[0]
    rgb, _, alpha = cache.render(v.c2w, v.K, W, H)
    assert alpha.mean() > 0.95 and psnr(rgb, v.rgb / 255.0) > 24.0


def window_of(views, is_new, conf=None) -> AlignedWindow:
    S = len(views)
    depth = np.stack([v.depth for v in views]).astype(np.float32)
    points = np.stack([unproject_depth(v.depth.astype(np.float64), v.K, v.c2w) for v in views]).astype(np.float32)
    conf = np.ones_like(depth) if conf is None else conf
    pred = WindowPrediction(
        frame_indices=np.array([v.index for v in views]), timestamps=np.array([v.timestamp for v in views]),
        sources=tuple(f"synthetic#{v.index}" for v in views), images=np.stack([v.rgb for v in views]),
        depth=depth, depth_conf=conf, c2w=np.stack([v.c2w for v in views]), K=np.stack([v.K for v in views]),
        points=points, points_conf=conf, pixel_maps=np.tile(np.eye(3), (S, 1, 1)),
        input_sizes=np.tile([W, H], (S, 1)), backend="synthetic")
    return AlignedWindow(pred, 1.0, np.eye(3), np.zeros(3), np.asarray(is_new, bool), window_index=0)


def test_add_window_fuses_only_the_new_views_of_an_aligned_window(sweep):
    by_window, by_view = GaussianCache(), GaussianCache()
    first = by_window.add_window(window_of(sweep[0:4], [True] * 4))
    second = by_window.add_window(window_of(sweep[2:6], [False, False, True, True]))
    fill(by_view, sweep[0:6])
    assert len(by_window) == len(by_view)
    assert first["added"] + second["added"] == len(by_window)
    assert not first["reset"] and not second["reset"]
    snap_w, snap_v = by_window.snapshot(), by_view.snapshot()
    np.testing.assert_allclose(snap_w.means, snap_v.means, atol=1e-5)


def test_a_window_of_a_new_segment_starts_the_cache_over(sweep):
    cache = GaussianCache()
    cache.add_window(window_of(sweep[0:3], [True] * 3))
    w = window_of(sweep[10:12], [True] * 2)
    w.segment = 1
    counts = cache.add_window(w)
    assert counts["reset"] and len(cache) == counts["added"] + counts["dynamic"]


def test_the_largest_world_is_found_and_a_shelved_one_can_be_read(sweep):
    cache = GaussianCache()
    cache.add_window(window_of(sweep[0:6], [True] * 6))
    first = cache.num_static
    small = window_of(sweep[10:11], [True])
    small.segment = 1
    cache.add_window(small)  # tracking lost: a second, smaller world
    assert cache.segment == 1 and 0 < cache.num_static < first
    assert cache.largest_segment() == 0
    shelved = cache.snapshot(segment=0)
    assert shelved.num == first and not shelved.is_dynamic.any()
    assert cache.snapshot(segment=1).num == len(cache)  # the current world, as snapshot() gives it
    with pytest.raises(KeyError, match="segment 7"):
        cache.snapshot(segment=7)



def test_a_shelved_world_moves_by_its_windows_and_the_current_one_stays(sweep):
    """The final adjustment refines the largest world, which may be shelved when the stream ended in
    another: its Gaussians follow the corrections, the current world's do not."""
    cache = GaussianCache()
    cache.add_window(window_of(sweep[0:6], [True] * 6))
    shelved_before = cache.snapshot(segment=0).means.copy()
    small = replace(window_of(sweep[10:11], [True]), window_index=1, segment=1)
    cache.add_window(small)
    current_before = cache.snapshot().means.copy()
    shift = Sim3(1.0, np.eye(3), np.array([0.2, 0.0, 0.0]))
    moved = cache.move_windows({0: shift, 1: shift}, segment=0)  # window 1 is not in world 0
    assert moved == len(shelved_before)
    np.testing.assert_allclose(cache.snapshot(segment=0).means, shelved_before + [0.2, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(cache.snapshot().means, current_before)
    with pytest.raises(KeyError, match="segment 7"):
        cache.move_windows({0: shift}, segment=7)

def in_world(window: AlignedWindow, sim3: Sim3) -> AlignedWindow:
    """The same window expressed in another world: ``sim3`` maps its world to that one."""
    p = window.prediction
    moved = replace(p, c2w=sim3.apply_c2w(p.c2w), depth=(p.depth * sim3.s).astype(np.float32),
                    points=sim3.apply(p.points.astype(np.float64)).astype(np.float32))
    return replace(window, prediction=moved)


def test_a_reattached_segment_is_mapped_back_and_merged_with_the_shelved_map(sweep):
    # Segment 1's world: world 0 turned 30 degrees, halved and shifted; the link maps it back.
    to_seg1 = Sim3(0.5, Rotation.from_euler("y", 30, degrees=True).as_matrix(), np.array([3.0, -1.0, 2.0]))
    back = to_seg1.inverse()
    cache = GaussianCache()
    cache.add_window(window_of(sweep[0:3], [True] * 3))
    lost = in_world(window_of(sweep[8:11], [True] * 3), to_seg1)
    lost.segment = 1
    assert cache.add_window(lost)["reset"] and cache.shelved_segments == [0]
    found = window_of(sweep[16:18], [True] * 2)  # the aligner already mapped the re-attaching window
    found.reattached = Reattachment(from_segment=1, to_segment=0, sim3=back, inliers=100,
                                    keyframe_index=2, frame_index=16)
    counts = cache.add_window(found)
    assert counts["reattached"] and not counts["reset"] and cache.shelved_segments == []

    reference = GaussianCache()
    for views in (sweep[0:3], sweep[8:11], sweep[16:18]):
        reference.add_window(window_of(views, [True] * len(views)))
    merged, ref = cache.snapshot(), reference.snapshot()
    assert abs(merged.num - ref.num) <= 0.05 * ref.num  # the shelved map came back, nothing doubled much
    gap, _ = cKDTree(ref.means).query(merged.means)
    # Every part lies in world 0 again: most Gaussians exactly where the reference has one, the rest
    # within the fusion tolerance (5 % of a 2-4 m depth); unmapped ones would be metres away.
    assert np.median(gap) < 1e-4 and np.quantile(gap, 0.999) < 0.1
    np.testing.assert_allclose(np.median(merged.scales, axis=0), np.median(ref.scales, axis=0), rtol=0.05)


def test_low_confidence_pixels_are_dropped_and_confidence_sets_opacity(sweep):
    v = sweep[0]
    conf = np.tile(np.linspace(0.01, 1.0, W), (H, 1))  # confidence rises left to right
    cache = GaussianCache(GaussianCacheConfig(conf_quantile=0.25))
    counts = cache.add_view(v.rgb, v.depth, conf, None, v.c2w, v.K, 0.0)
    assert counts["added"] <= 0.76 * (v.depth > 0).sum()
    snap = cache.snapshot()
    u = (snap.means @ np.linalg.inv(v.c2w)[:3, :3].T + np.linalg.inv(v.c2w)[:3, 3]) @ v.K.T
    u = u[:, 0] / u[:, 2]
    assert u.min() > 0.24 * W  # the left quarter (least confident) is gone
    assert np.corrcoef(u, snap.opacities)[0, 1] > 0.95  # more confident, more opaque
    cfg = cache.config
    assert cfg.min_opacity - 1e-6 <= snap.opacities.min() and snap.opacities.max() <= cfg.max_opacity + 1e-6


def test_snapshot_subsamples_and_picks_the_dynamic_layer_by_timestamp(sweep_cache):
    cache, _ = sweep_cache
    full = cache.snapshot()
    assert isinstance(full, GaussianSnapshot) and full.num == len(cache)
    small = cache.snapshot(max_points=1000)
    assert small.num == 1000 and np.isin(small.means[:, 0], full.means[:, 0]).all()
    assert cache.snapshot(max_points=0).num == 0
    assert not cache.snapshot(timestamp=1.0).is_dynamic.any()  # a static scene has no dynamic layer content
    q = full.quats
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert (full.scales > 0).all() and ((full.opacities > 0) & (full.opacities < 1)).all()


def test_bad_view_input_raises_a_clear_error(sweep):
    v = sweep[0]
    cache = GaussianCache()
    with pytest.raises(ValueError, match="depth has shape"):
        cache.add_view(v.rgb, v.depth[:-1], None, None, v.c2w, v.K, 0.0)
    with pytest.raises(ValueError, match="needs depth or points"):
        cache.add_view(v.rgb, None, None, None, v.c2w, v.K, 0.0)
    with pytest.raises(ValueError, match="c2w"):
        cache.add_view(v.rgb, v.depth, None, None, np.full((4, 4), np.nan), v.K, 0.0)
    with pytest.raises(ValueError, match="K must be"):
        cache.add_view(v.rgb, v.depth, None, None, v.c2w, -v.K, 0.0)
    with pytest.raises(ValueError, match="image must be"):
        cache.add_view(v.rgb[..., 0], v.depth, None, None, v.c2w, v.K, 0.0)
    with pytest.raises(ValueError, match="timestamp"):
        cache.add_view(v.rgb, v.depth, None, None, v.c2w, v.K, float("nan"))
    with pytest.raises(TypeError, match="AlignedWindow"):
        cache.add_window(v)
    with pytest.raises(ValueError, match="out of range: max_gaussians"):
        GaussianCacheConfig(max_gaussians=0)
    # An all-invalid view is fine: nothing is added.
    assert cache.add_view(v.rgb, np.zeros_like(v.depth), None, None, v.c2w, v.K, 0.0)["added"] == 0
    assert len(cache) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
def test_refinement_is_a_logged_no_op_without_cuda(sweep_cache, caplog):
    cache, _ = sweep_cache
    before = cache.snapshot()
    with caplog.at_level(logging.INFO, logger="memory.gaussians.refine"):
        result = cache.refine(steps=5)
    assert result["steps"] == 0 and "CUDA" in caplog.text
    np.testing.assert_array_equal(cache.snapshot().means, before.means)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat")
def test_refinement_lowers_the_photometric_error_on_recent_views(sweep):
    cache = GaussianCache()
    train, _ = split(sweep)
    fill(cache, train)
    v = train[-1]
    before = psnr(cache.render(v.c2w, v.K, W, H)[0], v.rgb / 255.0)
    result = cache.refine(steps=50)
    after = psnr(cache.render(v.c2w, v.K, W, H)[0], v.rgb / 255.0)
    assert result["refined"] > 0 and after > before


def test_a_loop_closure_moves_the_gaussians_of_the_windows_it_corrected(sweep):
    from dataclasses import replace

    from stream4d.geometry import Sim3

    cache = GaussianCache()
    cache.add_window(window_of(sweep[0:3], [True] * 3))
    cache.add_window(replace(window_of(sweep[3:6], [True] * 3), window_index=1))
    windows = cache._static["window"].copy()
    assert set(np.unique(windows)) == {0, 1}
    before = cache._static["means"].copy()
    a = np.radians(10.0)
    correction = Sim3(1.2, np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]),
                      np.array([0.3, 0.0, -0.1]))
    assert cache.move_windows({1: correction}) == int((windows == 1).sum())
    after = cache._static["means"]
    np.testing.assert_allclose(after[windows == 0], before[windows == 0])  # window 0 stays
    np.testing.assert_allclose(after[windows == 1], correction.apply(before[windows == 1].astype(np.float64)),
                               atol=1e-4)
    assert len(cache._index) == len(cache._static)
    # The voxel index followed in place: every Gaussian is found in the voxel of its moved mean.
    found = cache._index.query_voxels(cache._index.keys(after))
    assert sorted(found.tolist()) == list(range(len(cache._static)))
    # Through add_window: the next window carries the corrections of the windows a loop moved.
    counts = cache.add_window(replace(window_of(sweep[6:7], [True]), window_index=2, moved={0: correction}))
    assert counts["moved"] == int((windows == 0).sum())
