"""A window's final adjustment and mismatched keypoints (recon/default/sfm.py, ``_without_mismatches``).

The last view of a sweep overlaps the map through few points, and a third of its matches are false
(a repeated texture: they come from a camera turned away). PnP's RANSAC registers the view on the
true ones; left in the final adjustment, the false ones pull it off with the Huber loss's constant
force (strecha_castle_p30's last photo, docs/default_backend.md).
"""

from __future__ import annotations

import numpy as np
from test_default_sfm_pairs import errors, solve, yaw_pose

from recon.default.sfm import SfmConfig

SWEEP = [yaw_pose((0.4 * k, 0.0, 0.0), -4.0 * k) for k in range(6)]
TRACKS = ([((k, k + 1, k + 2), 150) for k in range(3)]
          + [((3, 4, 5), 40), ((3, 4, 5), 25, {5: yaw_pose((2.0, 0.3, 0.2), -50.0)})])


def test_false_matches_of_a_weakly_held_view_do_not_move_it():
    gated, _ = solve(SWEEP, TRACKS)
    ungated, _ = solve(SWEEP, TRACKS, SfmConfig(final_ba_gate_px=np.inf, final_ba_gate_ratio=np.inf))
    assert sorted(gated.w2c) == list(range(len(SWEEP)))
    rot, centre = errors(gated, SWEEP)
    assert rot < 0.5
    assert centre < 0.01
    # Without the gate the same window ends with its last view turned and shifted far off.
    assert errors(ungated, SWEEP)[1] > 10 * centre
