from dataclasses import replace

import numpy as np
import pytest
from align_scenes import make_plane_scene

from align.aligner import AlignConfig, AlignmentError, StreamAligner
from align.synthetic import distort_layers, random_sim3, render_layered_room, window_from_geometry, window_spans
from stream4d.geometry import Sim3, unproject_depth


def exact_windows(scene, window, overlap, seed=0, layer_factors=None):
    """Windows of the scene, each in a random frame; ``layer_factors(k) -> [wall, panel]`` distorts depth."""
    rng = np.random.default_rng(seed)
    preds, to_window = [], []
    for k, span in enumerate(window_spans(len(scene.depth), window, overlap)):
        depth = scene.depth[span]
        if layer_factors is not None:
            depth = distort_layers(depth, scene.layers[span], layer_factors(k, rng))
        to_window.append(random_sim3(rng))
        preds.append(window_from_geometry(span, scene.images[span], depth, scene.c2w[span], scene.K, to_window[-1]))
    return preds, to_window


def world_truth(scene, to_world: Sim3) -> np.ndarray:
    """Ground-truth points [N, H, W, 3] in the world the first window defines."""
    return np.stack([to_world.apply(unproject_depth(d, scene.K, c)) for d, c in zip(scene.depth, scene.c2w)])


def point_error(aligner, preds, truth, scene) -> float:
    """Mean distance of newly emitted points to the truth."""
    errors = []
    for pred in preds:
        out = aligner.add(pred)
        new = pred.frame_indices[out.is_new]
        valid = scene.depth[new] > 0
        errors.append(np.linalg.norm(out.prediction.points[out.is_new] - truth[new], axis=-1)[valid])
    return float(np.concatenate(errors).mean())


@pytest.mark.parametrize("layerwise", [False, True])
def test_known_sim3_between_two_windows_of_exact_geometry_is_recovered(plane_scene, layerwise):
    preds, to_window = exact_windows(plane_scene, window=6, overlap=3)
    aligner = StreamAligner(AlignConfig(window=6, overlap=3, layerwise=layerwise))
    aligner.add(preds[0])
    out = aligner.add(preds[1])
    expected = to_window[0].compose(to_window[1].inverse())  # window 1 -> window 0 = world
    assert out.sim3_scale == pytest.approx(expected.s, rel=1e-6)
    np.testing.assert_allclose(out.sim3_R, expected.R, atol=1e-6)
    np.testing.assert_allclose(out.sim3_t, expected.t, atol=1e-6 * (1 + np.abs(expected.t).max()))
    truth = world_truth(plane_scene, to_window[0])[preds[1].frame_indices]
    np.testing.assert_allclose(out.prediction.points, truth, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(out.prediction.c2w, to_window[0].apply_c2w(plane_scene.c2w[preds[1].frame_indices]),
                               atol=1e-6 * expected.s * 10)


def test_first_window_defines_the_world_and_later_windows_drop_their_overlap_copies(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    first = aligner.add(preds[0])
    assert first.sim3_scale == 1.0 and np.all(first.sim3_R == np.eye(3)) and np.all(first.sim3_t == 0)
    np.testing.assert_allclose(first.prediction.c2w, preds[0].c2w)
    assert first.is_new.all() and first.window_index == 0 and first.segment == 0
    second = aligner.add(preds[1])
    assert second.is_new.tolist() == [False, False, True, True, True, True]
    assert second.window_index == 1 and second.info["shared_frames"] == 2
    emitted = np.concatenate([preds[0].frame_indices, preds[1].frame_indices[second.is_new]])
    assert emitted.tolist() == list(range(10))


def test_layerwise_alignment_cuts_point_error_by_at_least_30_percent_on_layer_distortions():
    scene = make_plane_scene(22)

    def factors(k, rng):  # the first window is exact: the world it defines is the truth
        if k == 0:
            return [1.0, 1.0]
        return [rng.uniform(0.97, 1.03), 1 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.2)]

    preds, to_window = exact_windows(scene, window=6, overlap=2, seed=5, layer_factors=factors)
    truth = world_truth(scene, to_window[0])
    sim3_only = point_error(StreamAligner(AlignConfig(window=6, overlap=2, layerwise=False)), preds, truth, scene)
    layerwise = point_error(StreamAligner(AlignConfig(window=6, overlap=2, layerwise=True)), preds, truth, scene)
    assert layerwise <= 0.7 * sim3_only
    assert layerwise < 0.01  # metres, in a scene 4-9 m deep


@pytest.mark.slow
def test_layerwise_alignment_cuts_point_error_on_a_rendered_room_with_floating_objects():
    seq = render_layered_room("orbit", 17, 128, 96, seed=0)  # textured stream4d.synthetic scene, ~20 s to render
    rng = np.random.default_rng(0)
    preds, to_window = [], []
    for k, span in enumerate(window_spans(17, 7, 2)):
        factors = [1.0, 1.0] if k == 0 else [rng.uniform(0.97, 1.03), 1 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.2)]
        to_window.append(random_sim3(rng))
        preds.append(window_from_geometry(span, seq.images[span], distort_layers(seq.depth[span], seq.layers[span],
                                                                                 factors), seq.c2w[span], seq.K,
                                          to_window[-1]))
    truth = np.stack([to_window[0].apply(unproject_depth(d.astype(np.float64), seq.K, c))
                      for d, c in zip(seq.depth, seq.c2w)])
    errors = {}
    for layerwise in (False, True):
        errors[layerwise] = point_error(StreamAligner(AlignConfig(window=7, overlap=2, layerwise=layerwise)), preds,
                                        truth, seq)
    assert errors[True] <= 0.7 * errors[False]


def test_layer_scales_refine_points_but_leave_poses_to_the_sim3_chain_by_default():
    scene = make_plane_scene(22)

    def factors(k, rng):
        return [rng.uniform(0.95, 1.05), rng.uniform(0.8, 1.2)]

    preds, _ = exact_windows(scene, window=6, overlap=2, seed=3, layer_factors=factors)
    runs = {}
    settings = {"sim3": dict(layerwise=False), "layerwise": {}, "laser": dict(register_on_layer_depth=True)}
    for name, cfg in settings.items():
        aligner = StreamAligner(AlignConfig(window=6, overlap=2, **cfg))
        runs[name] = [aligner.add(p) for p in preds]
    for a, b in zip(runs["sim3"], runs["layerwise"]):
        np.testing.assert_allclose(b.prediction.c2w, a.prediction.c2w, atol=1e-9)
    # LASER's choice registers on layer-scaled depth, so its later poses differ.
    laser = [w.sim3_scale for w in runs["laser"]]
    assert not np.allclose(laser, [w.sim3_scale for w in runs["sim3"]], rtol=1e-6, atol=0)


def test_window_sharing_no_frame_raises_a_clear_error(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(preds[0])
    with pytest.raises(AlignmentError, match="shares no frame.*new_segment_on_gap"):
        aligner.add(preds[2])


def test_window_sharing_no_frame_starts_a_new_segment_when_allowed(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    aligner = StreamAligner(AlignConfig(window=6, overlap=2, new_segment_on_gap=True))
    aligner.add(preds[0])
    gap = aligner.add(preds[2])
    assert gap.segment == 1 and gap.is_new.all() and gap.sim3_scale == 1.0
    assert gap.info["placement"] == "new segment"
    after = aligner.add(preds[3])
    assert after.segment == 1 and after.info["placement"] == "registered"


def test_overlap_without_confident_pixels_falls_back_to_camera_centres_and_says_so(plane_scene):
    preds, to_window = exact_windows(plane_scene, window=6, overlap=3)
    blind = preds[1].depth_conf.copy()
    blind[:3] = 0.0  # the model claims nothing about the shared frames
    aligner = StreamAligner(AlignConfig(window=6, overlap=3))
    aligner.add(preds[0])
    out = aligner.add(replace(preds[1], depth_conf=blind))
    assert out.info["degenerate_overlap"] is True
    assert out.info["scale_source"] == "camera_centres"
    assert "min_pixels=100" in out.info["fallback_reason"]
    expected = to_window[0].compose(to_window[1].inverse())
    assert out.sim3_scale == pytest.approx(expected.s, rel=1e-6)  # exact poses: the centres agree exactly


def test_zero_depth_overlap_with_one_shared_frame_falls_back_to_unit_scale(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=1)
    empty = preds[1].depth.copy()
    empty[0] = 0.0
    aligner = StreamAligner(AlignConfig(window=6, overlap=1))
    aligner.add(preds[0])
    out = aligner.add(replace(preds[1], depth=empty))
    assert out.info["scale_source"] == "unit" and out.sim3_scale == 1.0
    assert np.all(np.isfinite(out.prediction.points))


def test_fixed_intrinsics_reunproject_later_windows_with_the_first_windows_K(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    wrong_K = preds[1].K.copy()
    wrong_K[:, 0, 0] *= 1.05
    wrong_K[:, 1, 1] *= 1.05
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(preds[0])
    out = aligner.add(replace(preds[1], K=wrong_K))
    assert out.info["intrinsics"] == "fixed"
    np.testing.assert_allclose(out.prediction.K, np.broadcast_to(preds[0].K[0], wrong_K.shape))
    # The points follow the first window's K: the same as the exact window's.
    reference = StreamAligner(AlignConfig(window=6, overlap=2))
    reference.add(preds[0])
    np.testing.assert_allclose(out.prediction.points, reference.add(preds[1]).prediction.points, atol=1e-4)


def test_model_intrinsics_are_kept_when_they_agree_or_fixing_is_off(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    close_K = preds[1].K.copy()
    close_K[:, 0, 0] *= 1.005
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(preds[0])
    assert aligner.add(replace(preds[1], K=close_K)).info["intrinsics"] == "model"
    far_K = preds[1].K.copy()
    far_K[:, 0, 0] *= 1.2
    free = StreamAligner(AlignConfig(window=6, overlap=2, fix_intrinsics=False))
    free.add(preds[0])
    out = free.add(replace(preds[1], K=far_K))
    assert out.info["intrinsics"] == "model"
    np.testing.assert_allclose(out.prediction.K, far_K)


def halved(p):
    """Window ``p`` at half its model resolution (every 2nd pixel; K follows)."""
    K = p.K.copy()
    K[:, :2, :] /= 2.0
    K[:, :2, 2] -= 0.25  # pixel centres at integers: u -> (u + 0.5) / 2 - 0.5
    return replace(p, images=p.images[:, ::2, ::2], depth=p.depth[:, ::2, ::2], depth_conf=p.depth_conf[:, ::2, ::2],
                   points=p.points[:, ::2, ::2], points_conf=p.points_conf[:, ::2, ::2], K=K)


def test_a_window_of_another_resolution_sharing_frames_is_refused(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(preds[0])
    with pytest.raises(AlignmentError, match="one model resolution"):
        aligner.add(halved(preds[1]))


def test_windows_of_another_resolution_make_a_segment_of_their_own(plane_scene):
    # Portrait photos among landscape ones: windows never mix sizes, so a size change is a gap.
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    aligner = StreamAligner(AlignConfig(window=6, overlap=2, new_segment_on_gap=True))
    aligner.add(preds[0])
    small = aligner.add(halved(preds[2]))
    assert small.segment == 1 and small.info["placement"] == "new segment"
    after = aligner.add(halved(preds[3]))
    assert after.segment == 1 and after.info["placement"] == "registered"
    assert after.info["intrinsics"] == "model"  # held to the reference K of its own size
    assert aligner.model_size == preds[0].model_size


def test_bad_windows_are_refused_with_the_reason(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    with pytest.raises(TypeError, match="WindowPrediction"):
        aligner.add({"depth": preds[0].depth})
    broken = preds[0].c2w.copy()
    broken[2, 0, 3] = np.nan
    with pytest.raises(AlignmentError, match="non-finite camera poses"):
        aligner.add(replace(preds[0], c2w=broken))
    with pytest.raises(ValueError, match="overlap < window"):
        AlignConfig(window=5, overlap=5)


def test_reset_forgets_the_stream(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(preds[0])
    aligner.add(preds[1])
    aligner.reset()
    assert aligner.state_nbytes == 0
    out = aligner.add(preds[2])
    assert out.window_index == 0 and out.sim3_scale == 1.0 and out.is_new.all()


def test_state_does_not_grow_over_50_windows():
    scene = make_plane_scene(4 + 49 * 3)  # window 4, overlap 1: 50 windows
    preds, _ = exact_windows(scene, window=4, overlap=1, seed=7)
    assert len(preds) == 50
    aligner = StreamAligner(AlignConfig(window=4, overlap=1))
    sizes = []
    for pred in preds:
        aligner.add(pred)
        sizes.append(aligner.state_nbytes)
    assert max(sizes[1:]) == min(sizes[1:])
    one_frame = scene.depth[0].size * (4 + 1 + 4)  # depth, mask, labels of one kept frame
    assert sizes[-1] < 2 * one_frame


def test_keyframes_for_reattaching_stop_growing_at_their_bound():
    scene = make_plane_scene(4 + 29 * 3)  # window 4, overlap 1: 30 windows
    preds, _ = exact_windows(scene, window=4, overlap=1, seed=7)
    aligner = StreamAligner(AlignConfig(window=4, overlap=1, new_segment_on_gap=True))
    per_segment = aligner.config.reattach.keyframes_per_segment
    sizes = []
    for pred in preds:
        aligner.add(pred)
        sizes.append(aligner.keyframe_nbytes)
    assert sizes[per_segment - 1] > 0
    assert max(sizes[per_segment:]) <= 1.5 * sizes[per_segment - 1]  # keyframes replace, never pile up


def test_a_worlds_first_window_leaves_its_layers_and_keyframe_to_the_next_window(plane_scene):
    """A stream's last window segments nothing and lifts no keyframe; the next window does it, and its
    layer-wise result equals segmenting eagerly with the first window's thresholds."""
    preds, _ = exact_windows(plane_scene, window=6, overlap=3)
    aligner = StreamAligner(AlignConfig(window=6, overlap=3, new_segment_on_gap=True))
    aligner.add(preds[0])
    state = aligner._state
    assert state.labels is None and state.layer_thresholds is not None
    assert aligner._linker.nbytes == 0 and aligner.keyframe_nbytes > 0  # pending, not yet lifted
    eager = aligner._layers(state.depth, state.mask, state.layer_thresholds)
    aligner.add(preds[1])
    np.testing.assert_array_equal(state.labels, eager)  # made on the second window's turn
    assert aligner._linker.nbytes > 0  # the first window's keyframe is lifted now
    assert aligner._state.labels is not None  # later windows keep their own layers as before


def test_the_models_stream_intrinsics_are_the_reference_not_the_first_windows(plane_scene):
    preds, _ = exact_windows(plane_scene, window=6, overlap=2)
    early_K = preds[0].K.copy()  # a self-calibrating model's first guess, 5 % long
    early_K[:, 0, 0] *= 1.05
    early_K[:, 1, 1] *= 1.05
    true_K = preds[1].K[0]
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(replace(preds[0], K=early_K, info={"stream_K": early_K[0].tolist()}))
    # The model has since estimated the stream's K better, and solved this window with it.
    out = aligner.add(replace(preds[1], info={"stream_K": true_K.tolist()}))
    assert out.info["intrinsics"] == "model"
    np.testing.assert_allclose(out.prediction.K, preds[1].K)
    # A window the model solved with its own focal far from the stream's is re-unprojected with the stream's.
    wrong_K = preds[1].K.copy()
    wrong_K[:, 0, 0] *= 0.9
    wrong_K[:, 1, 1] *= 0.9
    again = StreamAligner(AlignConfig(window=6, overlap=2))
    again.add(replace(preds[0], K=early_K, info={"stream_K": early_K[0].tolist()}))
    fixed = again.add(replace(preds[1], K=wrong_K, info={"stream_K": true_K.tolist()}))
    assert fixed.info["intrinsics"] == "fixed"
    np.testing.assert_allclose(fixed.prediction.K, preds[1].K)
