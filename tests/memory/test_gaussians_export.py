"""splats.ply in the standard 3DGS layout (round trips with our reader, plyfile and gsplat), points.ply via Open3D."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch
from gsplat.exporter import export_splats
from plyfile import PlyData

from memory.gaussians.export import SH_C0, read_splats_ply, write_points_ply, write_splats_ply
from memory.gaussians.render import render_gaussians
from stream4d.contracts import GaussianSnapshot

STANDARD_LAYOUT = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                   "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def make_snapshot(n: int = 500, dynamic: int = 0, seed: int = 0) -> GaussianSnapshot:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    ts = np.full(n, np.nan)
    ts[:dynamic] = rng.choice([0.5, 1.25], dynamic)
    return GaussianSnapshot(
        means=np.c_[rng.uniform(-1, 1, (n, 2)), rng.uniform(1.5, 3.0, n)].astype(np.float32),
        colors=rng.uniform(0, 1, (n, 3)).astype(np.float32),
        opacities=rng.uniform(0.05, 0.98, n).astype(np.float32),
        scales=rng.uniform(0.002, 0.05, (n, 3)).astype(np.float32),
        quats=(q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
        timestamps=ts,
    )


def assert_same(a: GaussianSnapshot, b: GaussianSnapshot) -> None:
    for name in ("means", "colors", "opacities", "scales", "quats"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)


def test_splats_round_trip_through_our_reader(tmp_path):
    snap = make_snapshot()
    path = write_splats_ply(tmp_path / "out" / "splats.ply", snap)
    assert path.is_file()
    assert_same(read_splats_ply(path), snap)


def test_dynamic_gaussians_keep_their_timestamps_in_an_extra_column(tmp_path):
    snap = make_snapshot(dynamic=120)
    back = read_splats_ply(write_splats_ply(tmp_path / "splats.ply", snap))
    assert_same(back, snap)
    assert back.is_dynamic.sum() == 120


def test_splats_file_has_the_standard_3dgs_layout_and_encodings(tmp_path):
    snap = make_snapshot(50)
    path = write_splats_ply(tmp_path / "splats.ply", snap)
    ply = PlyData.read(str(path))
    assert ply.byte_order == "<" and not ply.text
    v = ply["vertex"].data
    assert list(v.dtype.names) == STANDARD_LAYOUT  # static only: no extra column
    assert all(v.dtype[name] == np.dtype("<f4") for name in STANDARD_LAYOUT)
    np.testing.assert_allclose(v["f_dc_1"], (snap.colors[:, 1] - 0.5) / 0.28209479177387814, rtol=1e-5)
    np.testing.assert_allclose(v["opacity"], np.log(snap.opacities / (1 - snap.opacities)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v["scale_2"], np.log(snap.scales[:, 2]), rtol=1e-5)
    np.testing.assert_allclose(np.stack([v[f"rot_{i}"] for i in range(4)], 1), snap.quats, rtol=1e-6)
    assert not np.any(np.stack([v["nx"], v["ny"], v["nz"]]))


def test_a_gsplat_style_loader_renders_our_file_like_the_original(tmp_path):
    snap = make_snapshot(800, seed=3)
    v = PlyData.read(str(write_splats_ply(tmp_path / "splats.ply", snap)))["vertex"].data
    # What gsplat-based tools do with a 3DGS ply: exp(scale), sigmoid(opacity), SH0 -> RGB.
    loaded = {
        "means": np.stack([v["x"], v["y"], v["z"]], 1),
        "quats": np.stack([v[f"rot_{i}"] for i in range(4)], 1),
        "scales": np.exp(np.stack([v[f"scale_{i}"] for i in range(3)], 1)),
        "opacities": 1 / (1 + np.exp(-v["opacity"])),
        "colors": np.stack([v[f"f_dc_{i}"] for i in range(3)], 1) * SH_C0 + 0.5,
    }
    K = np.array([[120.0, 0, 47.5], [0, 120.0, 35.5], [0, 0, 1]])
    ref = render_gaussians(snap, np.eye(4), K, 96, 72, backend="torch")
    got = render_gaussians(loaded, np.eye(4), K, 96, 72, backend="torch")
    assert ref[2].mean() > 0.3  # something was drawn
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_our_reader_loads_a_file_written_by_gsplats_exporter(tmp_path):
    snap = make_snapshot(200, seed=5)
    n = snap.num
    logit = np.log(snap.opacities / (1 - snap.opacities))
    sh_rest = torch.randn(n, 3, 3)  # degree-1 bands, which we do not use
    export_splats(
        means=torch.from_numpy(snap.means), scales=torch.log(torch.from_numpy(snap.scales)),
        quats=torch.from_numpy(snap.quats), opacities=torch.from_numpy(logit),
        sh0=torch.from_numpy((snap.colors - 0.5) / SH_C0)[:, None, :], shN=sh_rest,
        format="ply", save_to=str(tmp_path / "gsplat.ply"))
    assert_same(read_splats_ply(tmp_path / "gsplat.ply"), snap)


def test_points_ply_is_a_coloured_point_cloud_open3d_reads_back(tmp_path):
    snap = make_snapshot(300)
    path = write_points_ply(tmp_path / "points.ply", snap)
    pcd = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(pcd.points), snap.means, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pcd.colors), snap.colors, atol=1 / 255 + 1e-6)
    # Plain arrays with uint8 colours work too.
    pts = np.random.default_rng(0).normal(size=(40, 3))
    cols = np.random.default_rng(1).integers(0, 256, (40, 3)).astype(np.uint8)
    pcd = o3d.io.read_point_cloud(str(write_points_ply(tmp_path / "p2.ply", pts, cols)))
    np.testing.assert_allclose(np.asarray(pcd.colors) * 255, cols, atol=0.51)


def test_export_rejects_bad_input_with_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_splats_ply(tmp_path / "missing.ply")
    write_points_ply(tmp_path / "points.ply", np.zeros((5, 3)))
    with pytest.raises(ValueError, match="not a 3DGS splat file"):
        read_splats_ply(tmp_path / "points.ply")
    bad = make_snapshot(5)
    bad.scales[0, 0] = 0.0
    with pytest.raises(ValueError, match="scales must be positive"):
        write_splats_ply(tmp_path / "bad.ply", bad)
    with pytest.raises(ValueError, match="colors has shape"):
        write_points_ply(tmp_path / "p.ply", np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match="GaussianSnapshot"):
        write_splats_ply(tmp_path / "x.ply", {"means": np.zeros((1, 3))})
