"""A photo collection out of capture order through the run: retrieval order before windowing,
windows per group of frames (stream4d/pipeline/grouping.py), the --order flag."""

from __future__ import annotations

import json
import random

import cv2
import numpy as np
import pytest

from stream4d.contracts import Frame
from stream4d.pipeline.grouping import DroppedTail, grouped_windows


def frames(indices):
    img = np.zeros((8, 8, 3), np.uint8)
    return [Frame(index=i, timestamp=float(i), image=img, source=f"{i}.png") for i in indices]


def windows(order, groups, window=4, overlap=1):
    return [[f.index for f in w] for w in grouped_windows(iter(frames(order)), lambda: groups, window, overlap)]


def test_no_groups_is_plain_sliding_windows():
    assert windows(range(7), {}) == [[0, 1, 2, 3], [3, 4, 5, 6]]


def test_no_window_spans_two_groups():
    order = [5, 0, 3, 1, 4, 2, 6]
    groups = {5: 0, 0: 0, 3: 0, 1: 0, 4: 0, 2: 1, 6: 1}
    assert windows(order, groups) == [[5, 0, 3, 1], [1, 4], [2, 6]]


def test_a_group_of_one_frame_makes_no_window():
    assert windows([0, 1, 2, 9], {0: 0, 1: 0, 2: 0, 9: 1}) == [[0, 1, 2]]


def test_empty_input_makes_no_window():
    assert windows([], {}) == []


def retried(order, posed_by_window, window=4, overlap=1, limit=3, groups=None, last_window=True):
    """Windows as the pipeline feeds them when the model poses ``posed_by_window[i]`` of window i
    (None: the model failed on it)."""
    retry, out = DroppedTail(limit, last_window), []
    for i, w in enumerate(retry.windows(grouped_windows(iter(frames(order)), lambda: groups or {}, window, overlap))):
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


def test_at_most_limit_views_are_carried_the_latest_ones():
    assert retried(range(12), [[0]], window=8, overlap=1, limit=2) == [list(range(8)), [5, 6] + list(range(7, 12))]


def test_the_last_window_s_dropped_views_make_one_more_window():
    assert retried(range(9), [None, [4, 5]], window=5) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [6, 7, 8]]
    # Two views are too few to be worth a window of their own.
    assert retried(range(9), [None, [4, 5, 6]], window=5) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]
    # A photo collection's input leaves them unposed.
    assert retried(range(9), [None, [4, 5]], window=5, last_window=False) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]


def test_dropped_views_do_not_cross_into_another_group():
    groups = {i: 0 if i < 5 else 1 for i in range(10)}
    assert retried(range(10), [[0, 1]], window=5, groups=groups) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


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
