"""VGGT's pose encoding <-> extrinsics/intrinsics, checked against SciPy's rotations."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from recon.vggt.utils.pose_encoding import (
    encoding_to_extrinsics_intrinsics,
    extrinsics_intrinsics_to_encoding,
    matrix_to_quaternion,
    quaternion_to_matrix,
)


def rotations() -> Rotation:
    special = Rotation.from_rotvec([[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi], [0, 0, 0], [1e-7, 0, 0],
                                    [np.pi * 0.999, 0.1, 0]])
    return Rotation.concatenate([Rotation.random(200, random_state=0), special])


def test_quaternion_to_matrix_matches_scipy_for_xyzw_quaternions():
    rots = rotations()
    got = quaternion_to_matrix(torch.from_numpy(rots.as_quat()))  # SciPy is scalar-last too
    np.testing.assert_allclose(got.numpy(), rots.as_matrix(), atol=1e-12)


def test_unnormalised_quaternions_give_the_same_rotation():
    q = torch.from_numpy(rotations().as_quat())
    torch.testing.assert_close(quaternion_to_matrix(3.7 * q), quaternion_to_matrix(q))


def test_matrix_to_quaternion_inverts_and_keeps_w_non_negative():
    rots = rotations()
    q = matrix_to_quaternion(torch.from_numpy(rots.as_matrix()))
    assert (q[..., 3] >= 0).all()
    np.testing.assert_allclose(np.abs((q.numpy() * rots.as_quat()).sum(-1)), 1.0, atol=1e-9)
    np.testing.assert_allclose(quaternion_to_matrix(q).numpy(), rots.as_matrix(), atol=1e-9)


def test_encoding_round_trips_through_extrinsics_and_intrinsics():
    rots = Rotation.random(8, random_state=1)
    H, W = 392, 518
    extr = torch.cat([torch.from_numpy(rots.as_matrix()), torch.randn(8, 3, 1, dtype=torch.float64)], dim=-1)
    K = torch.zeros(8, 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1] = torch.linspace(300, 700, 8, dtype=torch.float64), 450.0
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2, H / 2, 1
    enc = extrinsics_intrinsics_to_encoding(extr, K, (H, W))
    assert enc.shape == (8, 9)
    extr2, K2 = encoding_to_extrinsics_intrinsics(enc, (H, W))
    torch.testing.assert_close(extr2, extr)
    torch.testing.assert_close(K2, K)


def test_intrinsics_follow_the_fields_of_view_with_the_principal_point_at_half_the_size():
    enc = torch.zeros(9)
    enc[6] = 1.0  # identity rotation
    enc[7], enc[8] = 2 * np.arctan(0.5), 2 * np.arctan(1.0)  # fov_h, fov_w
    extr, K = encoding_to_extrinsics_intrinsics(enc, (100, 200))
    torch.testing.assert_close(extr, torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1))
    assert K[0, 0].item() == pytest.approx(100.0) and K[1, 1].item() == pytest.approx(100.0)
    assert (K[0, 2].item(), K[1, 2].item()) == (100.0, 50.0)


def test_matrix_to_quaternion_rejects_non_3x3_input():
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        matrix_to_quaternion(torch.zeros(2, 4, 4))
