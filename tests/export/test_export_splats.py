"""splats.ply and the COLMAP export share one world: splat centres sit where the sparse points are."""

from __future__ import annotations

import numpy as np
import pycolmap

from stream4d.export import export
from stream4d.outputs import read_points_ply


def test_splat_centres_project_into_the_exported_cameras_at_the_sparse_points_depth(finished_run, tmp_path):
    rec = pycolmap.Reconstruction(str(export(finished_run, "colmap", tmp_path / "colmap") / "sparse" / "0"))
    means, _ = read_points_ply(finished_run / "splats.ply")  # 3DGS layout: centres read as points
    ratios = []
    for im in rec.images.values():
        cam = rec.cameras[im.camera_id]
        w2c = im.cam_from_world().matrix()
        pc = means @ w2c[:, :3].T + w2c[:, 3]
        front = pc[:, 2] > 0
        pc = pc[front]
        uv = np.floor(np.stack([cam.img_from_cam(p) for p in pc[:: max(1, len(pc) // 40000)]]))
        pc = pc[:: max(1, len(pc) // 40000)]
        # The nearest splat at each pixel (a z-buffer), looked up at the sparse observations.
        zbuf = np.full((cam.height, cam.width), np.inf)
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        np.minimum.at(zbuf, (uv[ok, 1].astype(int), uv[ok, 0].astype(int)), pc[ok, 2])
        for p2d in im.points2D:
            x, y = (int(c) for c in np.floor(p2d.xy))
            z_splat = zbuf[max(0, y - 1):y + 2, max(0, x - 1):x + 2].min()
            if np.isfinite(z_splat):
                xyz = rec.points3D[p2d.point3D_id].xyz
                ratios.append(z_splat / (w2c[2, :3] @ xyz + w2c[2, 3]))
    ratios = np.array(ratios)
    assert len(ratios) > 1000
    assert np.median(np.abs(np.log(ratios))) < 0.05  # same world and scale: depths agree within 5 %
