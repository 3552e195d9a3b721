"""The one place quaternions are converted: w-first, w >= 0, round trips, batched."""

import numpy as np

from stream4d.geometry import quat_wxyz, rotation_from_quat_wxyz


def test_a_quarter_turn_about_z_has_the_textbook_quaternion():
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(quat_wxyz(R), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)


def test_batches_round_trip_with_w_never_negative():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 50, 4))
    R = rotation_from_quat_wxyz(q)
    assert R.shape == (2, 50, 3, 3)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    back = quat_wxyz(R)
    assert back.shape == (2, 50, 4) and (back[..., 0] >= 0).all()
    unit = q / np.linalg.norm(q, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.abs((back * unit).sum(-1)), 1.0, atol=1e-12)  # same rotation up to sign
