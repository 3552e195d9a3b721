"""Camera paths through the built-in layouts: camera-to-world float64 [N, 4, 4], OpenCV axes.

Every path stays in the free space a layout's ``Stage`` describes, so each
frame looks at geometry. Defaults move a little per frame (so that frame
pairs overlap enough for matching, whatever N is) and are capped so a path
never leaves the free space: a long sequence moves less per frame.
"""

from __future__ import annotations

import numpy as np

from stream4d.synthetic.layouts import SCENE_KINDS, STAGES
from stream4d.synthetic.primitives import WORLD_DOWN, Stage
from stream4d.synthetic.scene import Scene

TRAJECTORY_KINDS = ("forward", "orbit", "sideways", "handheld", "figure8")

_OPTIONS = {
    "forward": {"step", "sway", "pitch_deg"},
    "orbit": {"radius", "step_deg", "arc_deg", "start_deg", "height", "target"},
    "sideways": {"step", "bob"},
    "handheld": {"drift", "jitter", "jitter_deg"},
    "figure8": {"length", "width", "laps", "step", "yaw_deg", "pitch_deg", "height", "bob"},
}


def look_at(eye, target, down=WORLD_DOWN) -> np.ndarray:
    """Camera-to-world [..., 4, 4] of cameras at ``eye [..., 3]`` looking at ``target [..., 3]``.

    Image y points along ``down`` projected on the image plane (world down by default).
    """
    eye, target = np.broadcast_arrays(np.asarray(eye, np.float64), np.asarray(target, np.float64))
    z = target - eye
    zn = np.linalg.norm(z, axis=-1, keepdims=True)
    if np.any(zn < 1e-9):
        raise ValueError("look_at: an eye and its target coincide")
    z = z / zn
    x = np.cross(np.asarray(down, np.float64), z)
    xn = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(xn < 1e-9):
        raise ValueError(f"look_at: a viewing direction is parallel to down {down}")
    x = x / xn
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, :3] = np.stack([x, np.cross(z, x), z], axis=-1)
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def _rotations(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrices [N, 3, 3] of axis-angle vectors [N, 3] (radians)."""
    angle = np.linalg.norm(axis_angle, axis=1)
    k = axis_angle / np.maximum(angle, 1e-12)[:, None]
    K = np.zeros((len(k), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K = K - np.swapaxes(K, 1, 2)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * K + (1 - c) * K @ K


def _stage_of(scene) -> Stage:
    if scene is None:
        return STAGES["room"]
    if isinstance(scene, str):
        if scene not in SCENE_KINDS:
            raise ValueError(f"trajectory scene must be one of {SCENE_KINDS} or a Scene, got {scene!r}")
        return STAGES[scene]
    if isinstance(scene, Scene):
        if scene.stage is None:
            raise ValueError("trajectory scene has no Stage (custom scene); build it with make_scene "
                             "or give Scene(stage=...)")
        return scene.stage
    raise ValueError(f"trajectory scene must be a Scene, a kind name or None, got {type(scene).__name__}")


def _forward(stage: Stage, n: int, rng: np.random.Generator, step=None, sway=None, pitch_deg=0.0):
    step = stage.drive_step if step is None else float(step)
    if n > 1:
        step = min(step, stage.drive_length / (n - 1))
    sway = min(0.3, 0.03 * stage.drive_length) if sway is None else float(sway)
    wavelength = stage.drive_length * rng.uniform(0.6, 1.2)
    phase = rng.uniform(0, 2 * np.pi)
    s = np.arange(n) * step
    # Lateral sway x(s) = sway * sin(2 pi s / wavelength + phase), re-based to start on the lane.
    x = sway * (np.sin(2 * np.pi * s / wavelength + phase) - np.sin(phase))
    heading = np.arctan(sway * 2 * np.pi / wavelength * np.cos(2 * np.pi * s / wavelength + phase))
    eye = stage.drive_start + np.stack([x, np.zeros(n), s], axis=1)
    pitch = np.full(n, np.tan(np.radians(float(pitch_deg))))  # pitch > 0 looks down (y is down)
    ahead = np.stack([np.sin(heading), pitch, np.cos(heading)], axis=1)
    return look_at(eye, eye + ahead)


def _orbit(stage: Stage, n: int, rng: np.random.Generator, radius=None, step_deg=3.0, arc_deg=None,
           start_deg=None, height=None, target=None):
    radius = stage.orbit_radius if radius is None else float(radius)
    if radius > stage.orbit_radius + 1e-9:
        raise ValueError(f"orbit radius {radius} leaves the free ring of this scene (max {stage.orbit_radius})")
    if arc_deg is not None:
        step_deg = float(arc_deg) / max(n - 1, 1)
    start = -90.0 + rng.uniform(-30, 30) if start_deg is None else float(start_deg)
    eye_y = stage.eye_y if height is None else float(height)
    target = stage.center if target is None else np.asarray(target, np.float64)
    angles = np.radians(start + np.arange(n) * float(step_deg))
    bob = 0.05 * np.sin(angles * rng.integers(2, 4) + rng.uniform(0, 2 * np.pi))  # slight height change
    eye = np.stack([stage.center[0] + radius * np.cos(angles), eye_y + bob,
                    stage.center[2] + radius * np.sin(angles)], axis=1)
    return look_at(eye, target)


def _sideways(stage: Stage, n: int, rng: np.random.Generator, step=None, bob=0.02):
    span = stage.walk_end - stage.walk_start
    length = float(np.linalg.norm(span))
    step = stage.walk_step if step is None else float(step)
    if n > 1:
        step = min(step, length / (n - 1))
    s = np.arange(n) * step
    # Walking bob: a small vertical oscillation, about two steps per metre.
    y = float(bob) * np.sin(2 * np.pi * 2.0 * s + rng.uniform(0, 2 * np.pi))
    eye = stage.walk_start + s[:, None] * (span / length) + y[:, None] * np.array([0.0, 1.0, 0.0])
    return look_at(eye, eye + stage.walk_look)


def _smooth_noise(rng: np.random.Generator, n: int, dims: int, window: int = 5) -> np.ndarray:
    """Unit-std gaussian noise [n, dims] smoothed over ``window`` frames (hand shake is not white)."""
    raw = rng.standard_normal((n + window - 1, dims))
    kernel = np.ones(window) / window
    out = np.stack([np.convolve(raw[:, k], kernel, mode="valid") for k in range(dims)], axis=1)
    return out / np.sqrt(1.0 / window)


def _handheld(stage: Stage, n: int, rng: np.random.Generator, drift=0.3, jitter=0.01, jitter_deg=0.4):
    tau = np.arange(n) / max(n - 1, 1)
    freqs = rng.uniform(0.3, 1.0, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    # Slow drift: one smooth wander per axis over the sequence, starting at the home position.
    wander = np.sin(2 * np.pi * freqs * tau[:, None] + phases) - np.sin(phases)
    pos = stage.handheld_eye + float(drift) / 2 * wander + float(jitter) * _smooth_noise(rng, n, 3)
    shake = np.radians(float(jitter_deg)) * _smooth_noise(rng, n, 3)
    c2w = look_at(pos, stage.center)
    c2w[:, :3, :3] = c2w[:, :3, :3] @ _rotations(shake)
    return c2w


def _lemniscate(t: np.ndarray, length: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Gerono's lemniscate in the figure's own frame: points ``[.., 2]`` (x, z) and their derivative
    d/dt. Lobes along z with tips at ``z = +-length``, each ``2 * width`` wide; the crossing at t = 0."""
    s, c = np.sin(t), np.cos(t)
    point = np.stack([2 * width * s * c, length * s], axis=-1)
    tangent = np.stack([2 * width * (c * c - s * s), length * c], axis=-1)
    return point, tangent


def _arc_to_parameter(length: float, width: float, samples: int = 20001) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative arc length ``[samples]`` (m) over one lap and the curve parameter at each, for walking
    the lemniscate at constant speed (the parameter alone runs fast through the crossing)."""
    t = np.linspace(0.0, 2 * np.pi, samples)
    speed = np.linalg.norm(_lemniscate(t, length, width)[1], axis=1)
    arc = np.concatenate([[0.0], np.cumsum((speed[1:] + speed[:-1]) / 2 * np.diff(t))])
    return arc, t


def _figure8(stage: Stage, n: int, rng: np.random.Generator, length=None, width=None, laps=2.0, step=None,
             yaw_deg=-20.0, pitch_deg=15.0, height=None, bob=0.02):
    length = 1.25 * stage.orbit_radius if length is None else float(length)
    width = 0.4 * stage.orbit_radius if width is None else float(width)
    for name, value in (("length", length), ("width", width)):
        if not value > 0:
            raise ValueError(f"figure8 {name} must be > 0 m, got {value}")
    if not -60.0 <= float(pitch_deg) <= 60.0:
        raise ValueError(f"figure8 pitch_deg must be within [-60, 60], got {pitch_deg}")
    if not float(bob) >= 0:
        raise ValueError(f"figure8 bob must be >= 0 m, got {bob}")
    arc, t_of_arc = _arc_to_parameter(length, width)
    lap = float(arc[-1])
    if step is None:
        if not float(laps) > 0:
            raise ValueError(f"figure8 laps must be > 0, got {laps}")
        step = float(laps) * lap / max(n - 1, 1)  # the last frame ends the last lap
    elif not float(step) > 0:
        raise ValueError(f"figure8 step must be > 0 m/frame, got {step}")
    s = np.arange(n) * float(step)
    t = np.interp(np.mod(s, lap), arc, t_of_arc)
    local, tangent = _lemniscate(t, length, width)
    yaw = np.radians(float(yaw_deg))
    turn = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]])  # (x, z) about the vertical
    ground = local @ turn.T
    heading = tangent @ turn.T
    heading /= np.linalg.norm(heading, axis=1, keepdims=True)
    corners = np.abs(_lemniscate(np.linspace(0, 2 * np.pi, 721), length, width)[0] @ turn.T).max(axis=0)
    if np.any(corners > stage.free_half_extent):
        raise ValueError(f"figure8 of length {length} m, width {width} m, yaw {float(yaw_deg)} deg reaches "
                         f"|x|, |z| = {corners.round(2).tolist()} m from the centre: leaves the free floor of "
                         f"this scene ({stage.free_half_extent.tolist()} m)")
    # Walking bob: about two steps per metre, a whole number per lap so every lap closes.
    cycles = max(1, round(2.0 * lap))
    y = float(bob) * np.sin(2 * np.pi * cycles * np.mod(s, lap) / lap + rng.uniform(0, 2 * np.pi))
    eye_y = stage.eye_y if height is None else float(height)
    eye = np.stack([stage.center[0] + ground[:, 0], eye_y + y, stage.center[2] + ground[:, 1]], axis=1)
    ahead = np.stack([heading[:, 0], np.full(n, np.tan(np.radians(float(pitch_deg)))), heading[:, 1]], axis=1)
    return look_at(eye, eye + ahead)


def make_trajectory(kind: str, num_frames: int, seed: int = 0, scene: Scene | str | None = None,
                    **kw) -> np.ndarray:
    """Camera-to-world poses float64 [N, 4, 4] (OpenCV axes) of a seeded path.

    ``scene`` picks the layout the path is fitted to: a Scene, "room" or
    "street" (default: "room"; the room paths also stay free in the street).
    Kinds and options (defaults in brackets):

    - "forward": drive along +z. ``step`` m/frame [layout's], ``sway`` lateral m, ``pitch_deg`` [0, >0 looks down].
    - "orbit": circle the scene centre looking in. ``radius`` [layout's], ``step_deg`` [3],
      ``arc_deg`` (overrides step_deg), ``start_deg`` [-90 +- 30 seeded; -90 = behind, looking +z],
      ``height`` (world y), ``target`` [3].
    - "sideways": walk parallel to a wall. ``step`` m/frame [layout's], ``bob`` m [0.02].
    - "handheld": hover near one spot looking at the centre. ``drift`` m [0.3], ``jitter`` m [0.01],
      ``jitter_deg`` [0.4].
    - "figure8": walk a figure-eight (Gerono's lemniscate) around the centre at eye height and constant
      speed, looking where the walker goes (the path's tangent) and ``pitch_deg`` down [15], as a user
      filming while walking does; every lap passes the same places with the same heading, so laps after
      the first revisit the first one's views (and the two branches cross at the centre at about 90
      degrees). ``length`` m centre to tip [1.25 x the layout's orbit radius], ``width`` m half-width of
      a lobe [0.4 x orbit radius], ``laps`` [2] (the last frame ends the last lap), ``step`` m/frame
      (overrides laps), ``yaw_deg`` turn of the figure about the vertical [-20: the room's column
      stands between the branches], ``height`` (world y), ``bob`` walking bob m [0.02].
    """
    if kind not in TRAJECTORY_KINDS:
        raise ValueError(f"trajectory kind must be one of {TRAJECTORY_KINDS}, got {kind!r}")
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    unknown = set(kw) - _OPTIONS[kind]
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for trajectory {kind!r}; "
                         f"known: {sorted(_OPTIONS[kind])}")
    stage = _stage_of(scene)
    rng = np.random.default_rng([int(seed), TRAJECTORY_KINDS.index(kind)])
    build = {"forward": _forward, "orbit": _orbit, "sideways": _sideways, "handheld": _handheld,
             "figure8": _figure8}[kind]
    return build(stage, int(num_frames), rng, **kw)


__all__ = ["TRAJECTORY_KINDS", "look_at", "make_trajectory"]
