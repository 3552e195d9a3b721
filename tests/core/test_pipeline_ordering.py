"""A photo collection out of capture order through the run: retrieval order before windowing,
windows per group of frames (stream4d/pipeline/grouping.py), the --order flag."""

from __future__ import annotations

import json
import random

import cv2
import numpy as np
import pytest

from stream4d.contracts import Frame
from stream4d.pipeline.grouping import DroppedViews, grouped_windows
from stream4d.pipeline.keyframing import HeldFrames


def frames(indices, portrait=()):
    """Frames of 8x8 images; those in ``portrait`` are 6x8 (W x H)."""
    return [Frame(index=i, timestamp=float(i), image=np.zeros((8, 6 if i in portrait else 8, 3), np.uint8),
                  source=f"{i}.png") for i in indices]


def windows(order, groups, window=4, overlap=1, portrait=()):
    return [[f.index for f in w]
            for w in grouped_windows(iter(frames(order, portrait)), lambda: groups, window, overlap)]


def test_no_groups_is_plain_sliding_windows():
    assert windows(range(7), {}) == [[0, 1, 2, 3], [3, 4, 5, 6]]


def test_no_window_spans_two_groups():
    order = [5, 0, 3, 1, 4, 2, 6]
    groups = {5: 0, 0: 0, 3: 0, 1: 0, 4: 0, 2: 1, 6: 1}
    assert windows(order, groups) == [[5, 0, 3, 1], [1, 4], [2, 6]]


def test_no_window_spans_two_image_sizes():
    assert windows(range(10), {}, portrait={4, 5, 6}) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    groups = {k: 0 for k in range(10)}
    assert windows(range(10), groups, portrait={4, 5, 6}) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_a_group_of_one_frame_makes_no_window():
    assert windows([0, 1, 2, 9], {0: 0, 1: 0, 2: 0, 9: 1}) == [[0, 1, 2]]


def test_empty_input_makes_no_window():
    assert windows([], {}) == []


def retried(order, posed_by_window, window=4, overlap=1, groups=None, at_end=True, held=None, portrait=()):
    """Windows as the pipeline feeds them when the model poses ``posed_by_window[i]`` of window i
    (None: the model failed on it; past the list: every view)."""
    retry, out = DroppedViews(window, overlap, at_end, held=held), []
    runs = grouped_windows(iter(frames(order, portrait)), lambda: groups or {}, window, overlap)
    for i, w in enumerate(retry.windows(runs)):
        out.append([f.index for f in w])
        posed = posed_by_window[i] if i < len(posed_by_window) else [f.index for f in w]
        if posed is not None:
            retry.after(w, posed)
    return out


def test_views_a_window_dropped_at_its_end_lead_the_next_window():
    # Window 0 poses 0-2 of 0-4 (a cut after 2): 3 is not in the next window's overlap, so it
    # comes back in front of it; 4, the overlap, is there already.
    assert retried(range(9), [[0, 1, 2]], window=5) == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7, 8]]


def test_nothing_is_carried_when_the_window_ends_posed_or_failed():
    assert retried(range(9), [[0, 2, 4]], window=5) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]
    assert retried(range(9), [None], window=5) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]


def test_at_most_window_minus_overlap_views_are_carried_the_latest_ones():
    # Window 1 (carried 1-3, then 4-8) poses only 1: 2-7 are dropped, 4-7 lead window 2 and
    # 2-3, too few for a window of their own, wait for the end in vain.
    assert retried(range(12), [[0], [1]], window=5) == [[0, 1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8],
                                                        [4, 5, 6, 7, 8, 9, 10, 11]]


def test_the_last_window_s_dropped_views_make_one_more_window():
    assert retried(range(9), [None, [4, 5]], window=5) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [6, 7, 8]]
    # Two views are too few to be worth a window of their own.
    assert retried(range(9), [None, [4, 5, 6]], window=5) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]
    # A photo collection's input leaves them unposed.
    assert retried(range(9), [None, [4, 5]], window=5, at_end=False) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]


def test_dropped_views_of_two_sizes_get_windows_of_one_size_each():
    # A camera that changed resolution at frame 5: the views each run dropped at its end come back
    # once the input ends, one size per window.
    out = retried(range(10), [[0, 1], [5, 6]], window=5, portrait=set(range(5, 10)))
    assert out == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [2, 3, 4], [7, 8, 9]]


def test_a_run_dropped_before_a_window_s_last_posed_view_gets_a_window_once_the_input_ends():
    # A cut away and back: window 1 (5-7 carried from window 0's tail, then 8-12) holds views 6-8
    # of the other scene, then the first scene again, and poses only the latter; a single view
    # dropped mid-window (2) is not tried again.
    held = HeldFrames()
    for i in range(13):
        if i in (6, 7, 8):
            held.hold(frames([100 + i])[0])
            held.keyframe(i)
    out = retried(range(13), [[0, 1, 3, 4], [5, 9, 10, 11, 12]], window=9, at_end=True, held=held)
    assert out == [list(range(9)), [5, 6, 7, 8, 9, 10, 11, 12], [6, 7, 8]]
    # The sink placing keyframe 9 lets go of earlier groups, but not of the ones kept for later.
    assert held.take(9) == [] and [f.index for f in held.take(7)] == [107] and held.abandoned == 0


def test_kept_views_past_the_cap_let_their_held_frames_go():
    held = HeldFrames()
    retry = DroppedViews(4, 1, keep=2, held=held)
    for i in range(3):
        held.hold(frames([100 + i])[0])
        held.keyframe(i)
    retry._hold_back(frames([0, 1, 2]))
    assert held.abandoned == 1 and held.take(2) != [] and held.take(1) != []


def test_dropped_views_do_not_cross_into_another_group():
    groups = {i: 0 if i < 5 else 1 for i in range(10)}
    assert retried(range(10), [[0, 1]], window=5, groups=groups, at_end=False) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("flag", ["auto", "given", "retrieval"])
def test_order_flag_sets_ingest_order(flag, tmp_path):
    from stream4d.cli import build_parser
    from stream4d.commands.reconstruct import config_from_args

    parser, _ = build_parser()
    args = parser.parse_args(["reconstruct", "in", "--out", str(tmp_path), "--order", flag])
    assert config_from_args(args).ingest.order == flag


def test_a_bad_order_is_refused():
    from recon.ingest import IngestError, IngestOptions

    with pytest.raises(IngestError, match="order"):
        IngestOptions(order="random")


def test_a_shuffled_image_folder_is_posed_whole_and_written_in_input_order(tmp_path):
    from stream4d.pipeline import ReconstructConfig, reconstruct
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence

    n = 16
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("orbit", n, seed=0, scene=scene, arc_deg=120.0)
    views = list(render_sequence(scene, c2w, intrinsics_for(256, 192, 60.0), 256, 192, seed=0))
    folder = tmp_path / "photos"
    folder.mkdir()
    order = list(range(n))
    random.Random(0).shuffle(order)
    for rank, k in enumerate(order):  # file rank = Frame.index; the name says which view it is
        cv2.imwrite(str(folder / f"{rank:02d}_view{k:02d}.png"), views[k].rgb[..., ::-1])
    out = tmp_path / "out"
    config = ReconstructConfig(rrd=False, gaussians=False).override({"align.window": 8, "align.overlap": 3})
    reconstruct(folder, out, config, progress=False)

    run = json.loads((out / "run.json").read_text())["frame_order"]
    assert run["mode"] == "auto" and run["reordered"]
    fed = [order[i] for i in run["order"]]  # views in the order the windows saw them
    assert max(abs(a - b) for a, b in zip(fed, fed[1:])) <= 2
    frames = json.loads((out / "trajectory.json").read_text())["frames"]
    assert [f["index"] for f in frames] == list(range(n))  # every view posed, listed in input order
    assert all(f["image"] == f"{f['index']:02d}_view{order[f['index']]:02d}.png" for f in frames)
    tum = [line for line in (out / "trajectory.tum").read_text().splitlines() if not line.startswith("#")]
    assert [float(line.split()[0]) for line in tum] == [f["timestamp"] for f in frames]


def test_portrait_photos_among_landscape_ones_are_posed_in_one_world(tmp_path):
    from stream4d.pipeline import ReconstructConfig, reconstruct
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence

    n, turned = 16, range(6, 11)  # views 6-10 saved as portrait photos (turned 90 degrees clockwise)
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("orbit", n, seed=0, scene=scene, arc_deg=120.0)
    views = list(render_sequence(scene, c2w, intrinsics_for(256, 192, 60.0), 256, 192, seed=0))
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, v in enumerate(views):
        rgb = cv2.rotate(v.rgb, cv2.ROTATE_90_CLOCKWISE) if k in turned else v.rgb
        cv2.imwrite(str(folder / f"{k:02d}.png"), rgb[..., ::-1])
    out = tmp_path / "out"
    config = ReconstructConfig(rrd=False, gaussians=False).override({"align.window": 8, "align.overlap": 3})
    reconstruct(folder, out, config, progress=False)

    assert "2 image sizes apart" in json.loads((out / "run.json").read_text())["frame_order"]["reason"]
    frames = json.loads((out / "trajectory.json").read_text())["frames"]
    assert [f["index"] for f in frames] == list(range(n))
    assert {f["segment"] for f in frames} == {0}  # the portrait photos' world re-attached
    assert all((f["width"], f["height"]) == ((192, 256) if f["index"] in turned else (256, 192)) for f in frames)
    # A turned photo's camera is the original camera turned about its optical axis: x' = -y, y' = x.
    # (The landscape chain jumps 48 degrees from view 5 to view 11, which costs it up to 1 degree.)
    turn = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    truth = [c[:3, :3] @ turn if k in turned else c[:3, :3] for k, c in enumerate(c2w)]
    got = [np.asarray(f["c2w"])[:3, :3] for f in frames]
    for k in range(1, n):
        rel_got, rel_truth = got[0].T @ got[k], truth[0].T @ truth[k]
        angle = np.degrees(np.arccos(np.clip((np.trace(rel_got.T @ rel_truth) - 1) / 2, -1, 1)))
        assert angle < 2.0, (k, angle)  # a camera not turned back would be 90 degrees off
