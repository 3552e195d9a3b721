"""The final adjustment's lens: one radial coefficient, estimated with a self-calibrated stream's focal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream4d.contracts import SparseTracks
from stream4d.geometry import radial_distorted, radial_undistorted
from stream4d.outputs import OutputWriter, PosedFrame, read_radial, read_trajectory_json
from stream4d.pipeline import final_ba
from stream4d.pipeline.final_ba import final_bundle_adjustment

WIDTH, HEIGHT, FOCAL = 160, 120, 150.0
K = np.array([[FOCAL, 0, 79.5], [0, FOCAL, 59.5], [0, 0, 1]])


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    c2w[:3, 3] = centre
    return c2w


def _lens_run(out: Path, k1: float, noise_px: float = 0.05, refine_focal: bool = True,
              lens: bool = True, views: int = 10, window_k1: float = 0.0,
              box: tuple[float, float] = (1.5, 1.0), windows_k1: tuple[float, float] | None = None) -> list[np.ndarray]:
    """One window of ``views`` keyframes on an arc around a box of points, its tracks seen through a lens of
    radial coefficient ``k1`` and written with the pinhole K the window would have solved (the true one)
    and the lens it found (``window_k1``), self-calibrated (``refine_focal``) or given; the box's half
    width and height are ``box``. With ``windows_k1`` the views are two windows instead, the first six
    and the last six, each written with its own lens. Returns the true poses."""
    rng = np.random.default_rng(11)
    points = rng.uniform([-box[0], -box[1], 4.0], [box[0], box[1], 6.5], (400, 3))
    truth, obs_point, obs_view, obs_xy = [], [], [], []
    for v in range(views):
        angle = np.deg2rad(-20 + 45.0 * v / views)
        centre = np.array([5.0 * np.sin(angle), 0.3 * np.cos(v), 5.0 - 5.0 * np.cos(angle)])
        c2w = _look_at(centre, np.array([0.0, 0.0, 5.0]))
        truth.append(c2w)
        pc = (points - c2w[:3, 3]) @ c2w[:3, :3]
        uv = radial_distorted(pc[:, :2] / pc[:, 2:] * FOCAL + K[:2, 2], K, k1)
        uv += rng.normal(0.0, noise_px, uv.shape)
        seen = np.nonzero((uv[:, 0] >= 0) & (uv[:, 0] < WIDTH - 1) & (uv[:, 1] >= 0) & (uv[:, 1] < HEIGHT - 1))[0]
        obs_point.append(seen)
        obs_view.append(np.full(len(seen), v))
        obs_xy.append(uv[seen])
    with OutputWriter(out) as writer:
        for v, c2w in enumerate(truth):  # the window's poses: near the truth, as a pinhole solve leaves them
            start = c2w.copy()
            start[:3, 3] += rng.normal(0.0, 0.01, 3)
            writer.add_frame(PosedFrame(v, 0.1 * v, f"{v}.png", start, K, WIDTH, HEIGHT))
            writer.write_frame_image(v, np.full((HEIGHT, WIDTH, 3), 20 * v, np.uint8), np.eye(3))
        spans = [np.arange(len(truth))] if windows_k1 is None else [np.arange(6), np.arange(len(truth) - 6, len(truth))]
        for w, span in enumerate(spans):
            tracks = SparseTracks(points + rng.normal(0.0, 0.01, points.shape), np.zeros((len(points), 3), np.uint8),
                                  np.concatenate([obs_point[v] for v in span]),
                                  np.concatenate([np.full(len(obs_point[v]), k) for k, v in enumerate(span)]),
                                  np.concatenate([obs_xy[v] for v in span]),
                                  np.repeat(K[None], len(span), axis=0), window_k1 if windows_k1 is None else windows_k1[w])
            writer.write_sparse(w, 0, span, tracks)
        frame_window = {v: 0 if windows_k1 is None or v < len(truth) // 2 else 1 for v in range(len(truth))}
        record = final_bundle_adjustment(writer, 0, frame_window, refine_focal=refine_focal, lens=lens)
        writer.write_run({"stats": {"segment": 0}})
    (out / "record.json").write_text(json.dumps(record))
    return truth


def _ate(out: Path, truth: list[np.ndarray]) -> float:
    from stream4d.geometry import umeyama

    est = np.array([f.c2w[:3, 3] for f in read_trajectory_json(out / "trajectory.json")])
    ref = np.array([c[:3, 3] for c in truth])
    return float(np.sqrt(((umeyama(est, ref).apply(est) - ref) ** 2).sum(axis=1).mean()))


def test_radial_undistorted_inverts_radial_distorted():
    xy = np.random.default_rng(0).uniform([0, 0], [WIDTH - 1, HEIGHT - 1], (50, 2))
    for k1 in (-0.08, 0.0, 0.05):
        bent = radial_distorted(xy, K, k1)
        np.testing.assert_allclose(radial_undistorted(bent, K, k1), xy, atol=1e-6)
    corner = radial_distorted(np.array([0.0, 0.0]), K, 0.05)  # pulled outwards by k1 |n|^2 of its radius
    n = -K[:2, 2] / FOCAL
    np.testing.assert_allclose(corner, K[:2, 2] + FOCAL * n * (1 + 0.05 * (n @ n)))


def test_a_lens_that_bends_the_tracks_is_estimated_and_every_output_says_so(tmp_path, monkeypatch):
    """Tracks seen through a lens (k1 = 0.08: 3.5 px at the image corner): the adjustment keeps the
    radial coefficient it finds, near the lens', and the cameras land closer to the truth than the
    pinhole adjustment leaves them; trajectory.json and the COLMAP and nerfstudio exports carry it.
    The same run without a lens keeps the pinhole."""
    pycolmap = pytest.importorskip("pycolmap")
    from stream4d.export import load_scene, write_colmap
    from stream4d.export.nerfstudio import transforms_json

    truth = _lens_run(tmp_path / "run", 0.08)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    lens = record["lens"]
    assert record["applied"] and lens["kept"], record
    assert lens["radial_k1"] == pytest.approx(0.08, abs=0.01) and lens["corner_px"] > 3.0
    assert record["focal"]["focal_px_after"] == pytest.approx(FOCAL, rel=0.02)
    assert read_radial(tmp_path / "run") == {0: pytest.approx(lens["radial_k1"], abs=1e-6)}
    scene = load_scene(tmp_path / "run")
    np.testing.assert_allclose([v.radial_k1 for v in scene.views], lens["radial_k1"], atol=1e-6)
    assert np.median(scene.reprojection_errors()) < 0.2  # the exports' filter projects through the lens
    write_colmap(scene, tmp_path / "colmap")
    camera = next(iter(pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0")).cameras.values()))
    assert camera.model == pycolmap.CameraModelId.SIMPLE_RADIAL
    assert camera.params[3] == pytest.approx(lens["radial_k1"], abs=1e-6)
    assert transforms_json(scene)["k1"] == pytest.approx(lens["radial_k1"], abs=1e-6)
    lens_error = _ate(tmp_path / "run", truth)
    with monkeypatch.context() as patch:
        patch.setattr(final_ba, "RADIAL_MIN_PX", np.inf)
        _lens_run(tmp_path / "held", 0.08)
    held = json.loads((tmp_path / "held" / "record.json").read_text())
    assert held["applied"] and not held["lens"]["kept"]
    assert lens_error < 0.8 * _ate(tmp_path / "held", truth)

    _lens_run(tmp_path / "pinhole", 0.0)  # the same run without a lens: the pinhole stays
    record = json.loads((tmp_path / "pinhole" / "record.json").read_text())
    assert record["applied"] and not record["lens"]["kept"], record
    assert record["lens"]["corner_px"] < final_ba.RADIAL_MIN_PX
    assert read_radial(tmp_path / "pinhole") == {}
    assert "radial_k1" not in json.loads((tmp_path / "pinhole" / "trajectory.json").read_text())


def test_the_adjustment_starts_from_the_lens_the_windows_found(tmp_path):
    """A lens bending the image corner by 11 px: its tracks' outer observations are further off a pinhole
    than the adjustment's 4 px gate. Windows that found the lens write it (``sparse/*.npz``
    ``radial_k1``); their observations are then checked through it and all of them enter, and the shared
    camera starts from it. Windows that did not lose the outer observations."""
    pytest.importorskip("pycolmap")
    from stream4d.outputs import read_sparse

    k1 = -0.25
    truth = _lens_run(tmp_path / "windows", k1, window_k1=k1, box=(3.0, 2.2))
    assert read_sparse(tmp_path / "windows", 0).radial == {v: k1 for v in range(len(truth))}
    record = json.loads((tmp_path / "windows" / "record.json").read_text())
    assert record["applied"] and record["lens"]["kept"] and record["lens"]["windows_k1"] == k1, record
    assert record["lens"]["radial_k1"] == pytest.approx(k1, abs=0.01)
    _lens_run(tmp_path / "pinhole_windows", k1, box=(3.0, 2.2))
    pinhole = json.loads((tmp_path / "pinhole_windows" / "record.json").read_text())
    assert "windows_k1" not in pinhole["lens"]
    assert pinhole["observations"] < 0.9 * record["observations"]


def test_windows_held_at_one_focal_with_lenses_of_their_own_share_one(tmp_path):
    """Windows whose focal was held (not refined) and which each adjusted their own lens
    (recon/default/lens_search.py): the lens is estimated for one camera, from their median."""
    pytest.importorskip("pycolmap")
    k1 = -0.25
    _lens_run(tmp_path / "run", k1, refine_focal=False, box=(3.0, 2.2), windows_k1=(-0.24, -0.26))
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["applied"] and record["lens"]["kept"], record
    assert record["lens"]["radial_k1"] == pytest.approx(k1, abs=0.01)
    assert read_radial(tmp_path / "run") == {0: pytest.approx(record["lens"]["radial_k1"], abs=1e-6)}


def test_a_given_camera_keeps_its_focal_and_gets_the_lens_its_tracks_show(tmp_path):
    """Intrinsics given (the focal held): the lens is estimated all the same, and K stays as given."""
    pytest.importorskip("pycolmap")
    _lens_run(tmp_path / "run", 0.08, refine_focal=False)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["applied"] and "focal" not in record and record["lens"]["kept"], record
    assert record["lens"]["radial_k1"] == pytest.approx(0.08, abs=0.01)
    for frame in read_trajectory_json(tmp_path / "run" / "trajectory.json"):
        np.testing.assert_array_equal(frame.K, K)
    assert read_radial(tmp_path / "run") == {0: pytest.approx(record["lens"]["radial_k1"], abs=1e-6)}


def test_a_run_told_to_keep_pinholes_estimates_no_lens(tmp_path):
    """config ``final_ba_lens`` false: the lens' tracks are adjusted with a pinhole and run.json says why."""
    pytest.importorskip("pycolmap")
    _lens_run(tmp_path / "run", 0.08, lens=False)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["applied"] and record["lens"] == {"kept": False, "why": "not asked for (config final_ba_lens)"}
    assert read_radial(tmp_path / "run") == {}


def test_a_few_views_do_not_decide_a_lens(tmp_path):
    """Six keyframes: the lens is not tried (with few views it trades with the focal and the poses)."""
    pytest.importorskip("pycolmap")
    _lens_run(tmp_path / "run", 0.08, views=6)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["applied"] and not record["lens"]["kept"] and record["lens"]["why"].startswith("6 views"), record
    assert read_radial(tmp_path / "run") == {}
