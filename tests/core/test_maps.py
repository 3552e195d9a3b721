"""Persistent maps end to end: save a map, resume a second half of the input in it, merge two maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream4d.cli import main
from stream4d.evaluation import evaluate_trajectory
from stream4d.outputs import PosedFrame, read_cameras_json
from stream4d.pipeline import ReconstructConfig, reconstruct
from stream4d.pipeline.maps import MapError, merge_maps, read_map, write_map

FRAMES, SIZE = 24, (256, 192)
HALVES = [(0, 14), (9, 24)]  # overlapping visits
N_A, N_B = (hi - lo for lo, hi in HALVES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A rendered room orbit with exact poses (images/ + cameras.json)."""
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence, write_sequence

    root = tmp_path_factory.mktemp("clip")
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("orbit", FRAMES, seed=0, scene=scene)
    write_sequence(root, render_sequence(scene, c2w, intrinsics_for(*SIZE, 60.0), *SIZE, fps=10.0, seed=0,
                                         progress=False))
    return root


def half(clip: Path, dst: Path, lo: int, hi: int) -> Path:
    """Frames [lo, hi) of the clip as a dataset folder of symlinks with the matching cameras.json."""
    cams = json.loads((clip / "cameras.json").read_text())
    frames = cams["frames"][lo:hi]
    (dst / "images").mkdir(parents=True)
    for f in frames:
        (dst / f["image"]).symlink_to(clip / f["image"])
    (dst / "cameras.json").write_text(json.dumps({**cams, "frames": frames}))
    return dst


def run(source: Path, out: Path, **values) -> dict:
    config = ReconstructConfig(rrd=False).override({"align.window": 8, "align.overlap": 2, **values})
    reconstruct(source, out, config, progress=False)
    return json.loads((out / "run.json").read_text())


def map_ate(map_dir: Path, clip: Path) -> float:
    """ATE of every frame of the map (all runs; frames matched by image name) over the clip's extent."""
    gt = read_cameras_json(clip / "cameras.json")
    by_name = {Path(f.image).name: f for f in gt}
    pred, ref = [], []
    for n, f in enumerate(read_map(map_dir).frames):
        pred.append(PosedFrame(n, n, "", np.asarray(f["c2w"]), np.full((3, 3), np.nan), 0, 0))
        ref.append(PosedFrame(n, n, "", by_name[Path(f["image"]).name].c2w, np.full((3, 3), np.nan), 0, 0))
    result = evaluate_trajectory(pred, ref, match="index")
    return result.ate_rmse / result.gt_extent


@pytest.fixture(scope="module")
def maps(clip, tmp_path_factory) -> dict:
    """Half A saved as a map; half B resumed in it; half B alone saved as its own map."""
    tmp = tmp_path_factory.mktemp("maps")
    a, b = (half(clip, tmp / f"half{k}", *HALVES[k]) for k in (0, 1))
    run(a, tmp / "out_a", save_map=str(tmp / "map_a"))
    resumed = run(b, tmp / "out_b", map_from=str(tmp / "map_a"), save_map=str(tmp / "map_ab"))
    run(b, tmp / "out_b_alone", save_map=str(tmp / "map_b"))
    return {"tmp": tmp, "resumed": resumed}


def test_a_saved_map_reads_back_whole(maps):
    saved = read_map(maps["tmp"] / "map_a")
    meta = json.loads((maps["tmp"] / "map_a" / "map.json").read_text())
    assert meta["format"] == "stream4d-map" and meta["version"] == 1
    assert len(saved.frames) == N_A and {f["run"] for f in saved.frames} == {0}
    assert len(saved.keyframes) == meta["sections"]["keyframes"]["count"] >= 3
    assert saved.gaussians is not None and len(saved.gaussians["means"]) == meta["sections"]["gaussians"]["count"] > 0
    assert saved.model_size == list(SIZE)
    written = json.loads((maps["tmp"] / "out_a" / "trajectory.json").read_text())["frames"]
    np.testing.assert_array_equal([f["c2w"] for f in saved.frames], [f["c2w"] for f in written])
    # Written again, it is the same map.
    write_map(maps["tmp"] / "map_a_copy", saved)
    again = read_map(maps["tmp"] / "map_a_copy")
    assert [f["c2w"] for f in again.frames] == [f["c2w"] for f in saved.frames]
    np.testing.assert_array_equal(again.gaussians["means"], saved.gaussians["means"])
    for x, y in zip(again.keyframes, saved.keyframes):
        np.testing.assert_array_equal(x.keyframe.points, y.keyframe.points)


def test_the_second_half_resumed_in_the_first_halfs_map_is_one_world(maps, clip):
    record = maps["resumed"]["map"]
    assert record["loaded"]["relocalised"] and record["saved"]["includes_loaded_map"]
    frames = json.loads((maps["tmp"] / "out_b" / "trajectory.json").read_text())["frames"]
    assert len(frames) == N_B and {f["segment"] for f in frames} == {0}
    union = read_map(maps["tmp"] / "map_ab")
    assert len(union.frames) == N_A + N_B and [r["run"] for r in union.runs] == [0, 1]
    assert map_ate(maps["tmp"] / "map_ab", clip) < 0.005  # both runs' frames together, one Sim(3)


def test_two_maps_of_overlapping_halves_merge_into_one(maps, clip, capsys):
    tmp = maps["tmp"]
    assert main(["merge", str(tmp / "map_a"), str(tmp / "map_b"), "--out", str(tmp / "merged")]) == 0
    assert "merged" in capsys.readouterr().out
    merged = read_map(tmp / "merged")
    a, b = read_map(tmp / "map_a"), read_map(tmp / "map_b")
    assert len(merged.keyframes) == len(a.keyframes) + len(b.keyframes)
    assert len(merged.frames) == N_A + N_B and len(merged.runs) == 2
    # B's Gaussians join only where A has none: the union is smaller than the sum.
    assert len(a.gaussians["means"]) < len(merged.gaussians["means"]) < len(a.gaussians["means"]) + len(b.gaussians["means"])
    assert map_ate(tmp / "merged", clip) < 0.005


@pytest.fixture(scope="module")
def stranger(maps) -> Path:
    """Map B with its descriptors replaced: a map of another place, which nothing of A matches."""
    saved = read_map(maps["tmp"] / "map_b")
    rng = np.random.default_rng(0)
    for m in saved.keyframes:
        d = m.keyframe.features.descriptors
        m.keyframe.features.descriptors = np.sqrt(rng.dirichlet(np.ones(d.shape[1]), len(d))).astype(np.float32)
    return write_map(maps["tmp"] / "stranger", saved)


def test_maps_that_do_not_overlap_are_not_merged(maps, stranger, capsys):
    tmp = maps["tmp"]
    with pytest.raises(MapError, match="do not overlap"):
        merge_maps(read_map(tmp / "map_a"), read_map(tmp / "stranger"))
    assert main(["merge", str(tmp / "map_a"), str(tmp / "stranger"), "--out", str(tmp / "never")]) == 1
    assert "do not overlap" in capsys.readouterr().err and not (tmp / "never").exists()


def test_what_is_not_a_map_is_refused_clearly(maps, tmp_path, capsys):
    with pytest.raises(MapError, match="no map.json"):
        read_map(tmp_path)
    meta = json.loads((maps["tmp"] / "map_a" / "map.json").read_text())
    (tmp_path / "map.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(MapError, match="map version 99"):
        read_map(tmp_path)
    code = main(["reconstruct", str(maps["tmp"] / "half1"), "--out", str(tmp_path / "out"), "--map",
                 str(tmp_path / "nothing"), "--quiet", "--no-rrd"])
    assert code == 2 and "not a map folder" in capsys.readouterr().err


def test_an_input_never_found_in_the_map_says_so_and_keeps_its_own_world(maps, stranger, tmp_path, capsys):
    code = main(["reconstruct", str(maps["tmp"] / "half0"), "--out", str(tmp_path / "out"), "--map", str(stranger),
                 "--save-map", str(tmp_path / "map"), "--quiet", "--no-rrd", "--window", "8", "--overlap", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "NOT relocalised" in printed and "map saved" in printed
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["map"]["loaded"]["relocalised"] is False and "own world" in record["map"]["loaded"]["note"]
    assert any("not relocalised" in w for w in record["stats"]["warnings"])
    assert not record["map"]["saved"]["includes_loaded_map"]
    saved = read_map(tmp_path / "map")
    assert len(saved.runs) == 1 and len(saved.frames) == N_A  # its own map only
