"""A loop's measured noise (align.pnp.pnp_sigma): the PnP pose's covariance from its own residuals."""

import numpy as np
from scipy.spatial.transform import Rotation

from align.pnp import pnp_pose, pnp_sigma
from stream4d.geometry import project_points

K = np.array([[400.0, 0, 160], [0, 400.0, 120], [0, 0, 1]])


def _scene(rng, n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points ``spread`` wide about 4 m in front of a camera at the origin looking down +z."""
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_rotvec([0.05, -0.1, 0.02]).as_matrix()
    c2w[:3, 3] = [0.3, -0.2, 0.1]
    cam = np.column_stack([rng.uniform(-spread, spread, (n, 2)), rng.uniform(3.5, 4.5, n)])
    return cam @ c2w[:3, :3].T + c2w[:3, 3], c2w


def test_pnp_sigma_matches_the_scatter_of_noisy_poses():
    rng = np.random.default_rng(0)
    world, c2w = _scene(rng, 150, 1.0)
    clean, _ = project_points(world, K, c2w)
    rotations, centres, predicted = [], [], []
    for trial in range(30):
        uv = clean + rng.normal(0, 0.5, clean.shape)
        fit, mask, _ = pnp_pose(uv, world, K, 3.0, trial)
        rotations.append(Rotation.from_matrix(fit[:3, :3] @ c2w[:3, :3].T).magnitude())
        centres.append(np.linalg.norm(fit[:3, 3] - c2w[:3, 3]))
        predicted.append(pnp_sigma(fit, uv[mask], world[mask], K))
    sigma_rot, sigma_centre = np.median(predicted, axis=0)
    # The worst-direction sigma bounds the RMS error of the whole vector within a small factor.
    assert 0.3 < np.sqrt(np.mean(np.square(rotations))) / sigma_rot < 2.0
    assert 0.3 < np.sqrt(np.mean(np.square(centres))) / sigma_centre < 2.0


def test_pnp_sigma_is_large_for_few_bunched_noisy_points():
    rng = np.random.default_rng(1)
    wide, c2w = _scene(rng, 800, 1.5)
    bunched, _ = _scene(rng, 60, 0.25)
    sigmas = []
    for world, noise in ((wide, 0.15), (bunched, 1.0)):
        uv, _ = project_points(world, K, c2w)
        uv = uv + rng.normal(0, noise, uv.shape)
        fit, mask, _ = pnp_pose(uv, world, K, 3.0)
        sigmas.append(pnp_sigma(fit, uv[mask], world[mask], K))
    (rot_good, centre_good), (rot_weak, centre_weak) = sigmas
    assert rot_weak > 20 * rot_good and centre_weak > 20 * centre_good
