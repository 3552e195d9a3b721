"""Synthetic scenes with exact geometry for tests and benchmarks (RGB, z-depth, poses, moving objects).

    scene = make_scene("room", seed=0, moving_object=False)
    c2w = make_trajectory("orbit", 60, seed=0, scene=scene)         # float64 [N, 4, 4]
    K = intrinsics_for(512, 384, fov_deg=60)
    views = render_sequence(scene, c2w, K, 512, 384, fps=10.0)      # lazy SyntheticView generator
    write_sequence("out/", views, video="demo.mp4", fps=10.0)       # cameras.json beside it
"""

from stream4d.synthetic.layouts import SCENE_KINDS, STAGES, make_scene
from stream4d.synthetic.primitives import Box, Material, MovingObject, Rect, Sphere, Stage, yaw_matrix
from stream4d.synthetic.raycast import Hits
from stream4d.synthetic.render import SyntheticView, intrinsics_for, render_sequence, render_view
from stream4d.synthetic.scene import Scene
from stream4d.synthetic.trajectories import TRAJECTORY_KINDS, look_at, make_trajectory
from stream4d.synthetic.writer import write_sequence

__all__ = [
    "SCENE_KINDS", "STAGES", "TRAJECTORY_KINDS", "make_scene", "make_trajectory", "look_at", "intrinsics_for",
    "render_view", "render_sequence", "write_sequence", "SyntheticView", "Scene", "Stage", "Hits", "Material",
    "Rect", "Box", "Sphere", "MovingObject", "yaw_matrix",
]
