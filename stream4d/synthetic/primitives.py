"""Scene building blocks: materials, rectangles, boxes, spheres, the moving object, camera stages.

World frame: metres, y points down (OpenCV-like, so an upright camera looking
along +z has identity rotation), floors at y = 0 and "up" is -y.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORLD_DOWN = np.array([0.0, 1.0, 0.0])  # gravity direction; "up" is -y


def as_vec3(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return arr


def as_unit(name: str, value) -> np.ndarray:
    arr = as_vec3(name, value)
    norm = np.linalg.norm(arr)
    if norm < 1e-12:
        raise ValueError(f"{name} must be a non-zero vector, got {value!r}")
    return arr / norm


@dataclass(frozen=True)
class Material:
    """How a surface reads the atlas: ``colour = tint * mix(0.5, atlas, contrast) * light``."""

    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB multiplier, each in [0, 1]
    contrast: float = 1.0  # 1: atlas as is, 0: flat tint
    texels_per_metre: float = 128.0  # atlas texels per metre of surface (texture scale)
    ambient: float = 0.5  # light that ignores the normal; 1.0 = unshaded (sky)


@dataclass(frozen=True)
class Rect:
    """Planar rectangle ``origin + a*u + b*v``, a in [0, width], b in [0, height].

    Its front side faces ``v x u``: seen from the front, u runs right and v down
    like image axes, so the texture reads unmirrored.
    """

    origin: np.ndarray  # [3]
    u: np.ndarray  # [3], unit
    v: np.ndarray  # [3], unit, perpendicular to u
    width: float
    height: float
    material: Material | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", as_vec3("Rect.origin", self.origin))
        object.__setattr__(self, "u", as_unit("Rect.u", self.u))
        object.__setattr__(self, "v", as_unit("Rect.v", self.v))
        if abs(float(self.u @ self.v)) > 1e-6:
            raise ValueError(f"Rect.u {self.u} and Rect.v {self.v} must be perpendicular")
        if not (self.width > 0 and self.height > 0):
            raise ValueError(f"Rect width and height must be > 0, got {self.width} x {self.height}")

    @staticmethod
    def facing(center, normal, width: float, height: float, material: Material | None = None) -> "Rect":
        """A rectangle centred at ``center`` whose front faces ``normal``.

        ``height`` runs along world down projected onto the plane (world z for
        horizontal rectangles), ``width`` along the remaining axis.
        """
        n = as_unit("Rect.facing normal", normal)
        hint = WORLD_DOWN if abs(n @ WORLD_DOWN) < 0.9 else np.array([0.0, 0.0, 1.0])
        v = hint - (hint @ n) * n
        v /= np.linalg.norm(v)
        u = np.cross(n, v)  # so that v x u = n
        c = as_vec3("Rect.facing center", center)
        return Rect(c - u * width / 2 - v * height / 2, u, v, float(width), float(height), material)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.v, self.u)

    @property
    def area(self) -> float:
        return self.width * self.height

    def corners(self) -> np.ndarray:
        """[4, 3] in order origin, +u, +u+v, +v."""
        a, b = self.u * self.width, self.v * self.height
        return np.stack([self.origin, self.origin + a, self.origin + a + b, self.origin + b])


def yaw_matrix(yaw_deg: float) -> np.ndarray:
    """Rotation about the vertical (y) axis."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass(frozen=True)
class Box:
    """Solid box: ``size`` = full extents along its local x, y, z; turned by ``yaw_deg`` about vertical."""

    center: np.ndarray  # [3]
    size: np.ndarray  # [3]
    yaw_deg: float = 0.0
    material: Material | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", as_vec3("Box.center", self.center))
        object.__setattr__(self, "size", as_vec3("Box.size", self.size))
        if np.any(self.size <= 0):
            raise ValueError(f"Box.size must be > 0 on every axis, got {self.size}")

    def faces(self) -> list[Rect]:
        """The six outward-facing faces."""
        R = yaw_matrix(self.yaw_deg)
        out = []
        for axis in range(3):
            for sign in (-1.0, 1.0):
                n = R[:, axis] * sign
                others = [a for a in range(3) if a != axis]
                u, v = R[:, others[0]], R[:, others[1]]
                if np.cross(v, u) @ n < 0:
                    u, v = v, u
                    w, h = self.size[others[1]], self.size[others[0]]
                else:
                    w, h = self.size[others[0]], self.size[others[1]]
                centre = self.center + n * self.size[axis] / 2
                out.append(Rect(centre - u * w / 2 - v * h / 2, u, v, float(w), float(h), self.material))
        return out


@dataclass(frozen=True)
class Sphere:
    center: np.ndarray  # [3]
    radius: float
    material: Material | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", as_vec3("Sphere.center", self.center))
        if not self.radius > 0:
            raise ValueError(f"Sphere.radius must be > 0, got {self.radius}")


@dataclass(frozen=True)
class MovingObject:
    """A rigid sphere or box on a known path; ``pose(time)`` gives object-to-world.

    - ``path="circle"``: centre moves on a horizontal circle (centre ``anchor``,
      ``radius`` m) at ``speed`` rad/s; it turns with the path and, for a sphere,
      rolls without slipping.
    - ``path="line"``: centre = ``anchor + velocity * time``, no rotation.
    """

    shape: str  # "sphere" | "box"
    size: tuple[float, float, float]  # box: full extents; sphere: (r, r, r)
    path: str  # "circle" | "line"
    anchor: tuple[float, float, float]
    radius: float = 0.0
    speed: float = 0.0  # rad/s on a circle
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m/s on a line

    def __post_init__(self) -> None:
        if self.shape not in ("sphere", "box"):
            raise ValueError(f"MovingObject.shape must be 'sphere' or 'box', got {self.shape!r}")
        if self.path not in ("circle", "line"):
            raise ValueError(f"MovingObject.path must be 'circle' or 'line', got {self.path!r}")
        if min(self.size) <= 0:
            raise ValueError(f"MovingObject.size must be > 0, got {self.size}")

    @property
    def half_size(self) -> np.ndarray:
        return np.asarray(self.size, np.float64) / 2

    @property
    def bounding_radius(self) -> float:
        return float(self.size[0]) if self.shape == "sphere" else float(np.linalg.norm(self.half_size))

    @property
    def num_surfaces(self) -> int:
        return 1 if self.shape == "sphere" else 6

    def pose(self, time: float) -> np.ndarray:
        """Object-to-world [4, 4] at ``time`` seconds."""
        T = np.eye(4)
        anchor = np.asarray(self.anchor, np.float64)
        if self.path == "line":
            T[:3, 3] = anchor + np.asarray(self.velocity, np.float64) * time
            return T
        angle = self.speed * time
        T[:3, 3] = anchor + self.radius * np.array([np.cos(angle), 0.0, np.sin(angle)])
        R = yaw_matrix(-np.degrees(angle))  # local x stays radial, local z tangential
        if self.shape == "sphere":
            # Rolling: turn about the radial axis by arc length / radius.
            roll = self.radius * angle / self.size[0]
            c, s = np.cos(roll), np.sin(roll)
            R = R @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
        T[:3, :3] = R
        return T


@dataclass(frozen=True)
class Stage:
    """Where cameras can go in a layout without entering geometry (used by ``make_trajectory``)."""

    center: np.ndarray  # [3] look-at target of "orbit" and "handheld"
    orbit_radius: float  # horizontal radius of the free ring around ``center``
    eye_y: float  # camera height as a world y (negative: above the floor)
    drive_start: np.ndarray  # [3] "forward" starts here and drives along +z
    drive_length: float  # metres of free road ahead of drive_start
    drive_step: float  # default metres per frame when driving
    walk_start: np.ndarray  # [3] "sideways" walks from here ...
    walk_end: np.ndarray  # [3] ... to here
    walk_look: np.ndarray  # [3] viewing direction while walking
    walk_step: float  # default metres per frame when walking
    handheld_eye: np.ndarray  # [3] "handheld" hovers around here, looking at ``center``
    # [2] half extents (x, z) m around ``center`` of the floor free of tall furniture at eye height,
    # with half a metre to spare ("figure8" stays inside; low things and the room's column may stand in it)
    free_half_extent: np.ndarray = field(default_factory=lambda: np.array([2.0, 2.0]))


__all__ = ["WORLD_DOWN", "Material", "Rect", "Box", "Sphere", "MovingObject", "Stage"]
