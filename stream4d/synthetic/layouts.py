"""The built-in scene layouts: "room" (indoor box with furniture) and "street" (facades for driving).

Both are seeded: the seed moves and resizes the furniture / buildings, picks
materials and the texture atlas. The camera free space described by each
``Stage`` is kept clear of geometry whatever the seed.

Room: x in [-4, 4], z in [-5, 5], floor y = 0, ceiling y = -3 (y points down).
A table cluster sits within 1.4 m of the centre, furniture stands along the
walls (|x| > 3 or |z| > 4), so the ring of radius 2.4 at eye height is free.

Street: road |x| < 5 along +z from z = -25 to 245, raised sidewalks to
|x| = 7.5, building blocks of 8-20 m behind them, end walls at both ends and
a flat textured cloud layer at 30 m height, so every ray hits something
(depths reach ~250 m looking down the street).
"""

from __future__ import annotations

import colorsys

import numpy as np

from stream4d.synthetic.primitives import Box, Material, MovingObject, Rect, Sphere, Stage
from stream4d.synthetic.scene import Scene

SCENE_KINDS = ("room", "street")

STAGES = {
    "room": Stage(
        center=np.array([0.0, -0.8, 0.0]), orbit_radius=2.4, eye_y=-1.5,
        drive_start=np.array([-2.0, -1.5, -4.0]), drive_length=6.5, drive_step=0.1,
        walk_start=np.array([-2.2, -1.5, -3.0]), walk_end=np.array([2.2, -1.5, -3.0]),
        walk_look=np.array([0.0, 0.0, 1.0]), walk_step=0.05,
        handheld_eye=np.array([0.4, -1.5, -3.0]), free_half_extent=np.array([2.8, 3.6]),
    ),
    "street": Stage(
        center=np.array([0.0, -1.5, 25.0]), orbit_radius=2.0, eye_y=-1.6,
        drive_start=np.array([1.2, -1.6, -10.0]), drive_length=210.0, drive_step=0.6,
        walk_start=np.array([-2.0, -1.6, 10.0]), walk_end=np.array([-2.0, -1.6, 70.0]),
        walk_look=np.array([1.0, 0.0, 0.0]), walk_step=0.15,
        handheld_eye=np.array([1.2, -1.6, 10.0]), free_half_extent=np.array([2.8, 20.0]),
    ),
}


def _tint(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple:
    return colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val))


def _mat(rng, sat=(0.2, 0.6), val=(0.7, 1.0), contrast=(0.8, 1.0), tpm=128.0, ambient=0.5) -> Material:
    return Material(_tint(rng, sat, val), float(rng.uniform(*contrast)), tpm, ambient)


def _room(rng: np.random.Generator) -> tuple[list[Rect], list[Box], list[Sphere]]:
    wall = lambda: _mat(rng, sat=(0.05, 0.3), val=(0.8, 1.0), contrast=(0.6, 0.8))  # noqa: E731
    rects = [
        Rect.facing((0, 0, 0), (0, -1, 0), 8, 10, _mat(rng, sat=(0.2, 0.5), val=(0.6, 0.9))),  # floor
        Rect.facing((0, -3, 0), (0, 1, 0), 8, 10, _mat(rng, sat=(0.0, 0.2), val=(0.8, 1.0), contrast=(0.5, 0.6))),
        Rect.facing((-4, -1.5, 0), (1, 0, 0), 10, 3, wall()),
        Rect.facing((4, -1.5, 0), (-1, 0, 0), 10, 3, wall()),
        Rect.facing((0, -1.5, -5), (0, 0, 1), 8, 3, wall()),
        Rect.facing((0, -1.5, 5), (0, 0, -1), 8, 3, wall()),
    ]
    j = lambda s: float(rng.uniform(-s, s))  # noqa: E731
    tx, tz, yaw = j(0.15), j(0.15), j(20)
    r_top = float(rng.uniform(0.18, 0.24))
    boxes = [
        Box((tx, -0.375, tz), (1.4, 0.75, 0.9), yaw, _mat(rng)),  # table
        Box((tx - 0.35, -0.9, tz - 0.1), (0.35, 0.3, 0.25), j(40), _mat(rng)),  # parcel on the table
        Box((0.95, -1.1, 0.55), (0.3, 2.2, 0.3), j(45), _mat(rng)),  # column
        Box((-3.7, -1.0, rng.uniform(-2.8, -1.2)), (0.6, 2.0, 1.6), 0, _mat(rng)),  # shelf
        Box((-3.75, -0.45, rng.uniform(1.5, 3.0)), (0.5, 0.9, 1.2), 0, _mat(rng)),  # cabinet
        Box((3.65, -0.6, rng.uniform(-2.5, 0.0)), (0.7, 1.2, 1.8), 0, _mat(rng)),  # dresser
        Box((3.7, -1.25, rng.uniform(1.5, 3.0)), (0.6, 2.5, 0.8), 0, _mat(rng)),  # wardrobe
        Box((rng.uniform(-1.0, 1.0), -0.4, 4.55), (2.4, 0.8, 0.9), 0, _mat(rng)),  # sofa
        Box((-2.9, -0.9, 4.6), (1.0, 1.8, 0.8), 0, _mat(rng)),  # bookcase
        Box((rng.uniform(-0.5, 1.5), -0.5, -4.6), (1.8, 1.0, 0.8), 0, _mat(rng)),  # sideboard
    ]
    # Posters: thin boxes on each wall, a few centimetres of relief.
    for centre, along in (((-4, 0, 0), 2), ((4, 0, 0), 2), ((0, 0, -5), 0), ((0, 0, 5), 0)):
        for _ in range(int(rng.integers(2, 4))):
            c = np.array(centre, np.float64)
            c[along] = rng.uniform(-2.8, 2.8) if along == 0 else rng.uniform(-3.8, 3.8)
            c[1] = rng.uniform(-2.3, -1.5)
            size = np.array([0.05, rng.uniform(0.4, 0.9), 0.05])
            size[along] = rng.uniform(0.5, 1.3)
            boxes.append(Box(c, size, 0, _mat(rng, sat=(0.3, 0.8))))
    spheres = [
        Sphere((tx + 0.3, -0.75 - r_top, tz + 0.1), r_top, _mat(rng, sat=(0.3, 0.8))),
        Sphere((-0.8, -0.35, -0.6), 0.35, _mat(rng, sat=(0.3, 0.8))),
        Sphere((3.3, -0.45, 4.3), 0.45, _mat(rng, sat=(0.3, 0.8))),
        Sphere((-3.3, -0.5, -4.3), 0.5, _mat(rng, sat=(0.3, 0.8))),
    ]
    return rects, boxes, spheres


def _street(rng: np.random.Generator) -> tuple[list[Rect], list[Box], list[Sphere]]:
    z0, z1 = -25.0, 245.0
    rects, boxes, spheres = [], [], []
    # Road and sidewalks in 10 m slabs: each slab reads its own part of the atlas.
    for z in np.arange(z0, z1, 10.0):
        rects.append(Rect.facing((0, 0, z + 5), (0, -1, 0), 10, 10,
                                 _mat(rng, sat=(0.0, 0.15), val=(0.45, 0.6), contrast=(0.6, 0.8))))
        for side in (-1, 1):
            # 4 m wide: it runs under the set-back building fronts, so no gap shows at its foot.
            boxes.append(Box((side * 7.0, -0.075, z + 5), (4.0, 0.15, 10), 0,
                             _mat(rng, sat=(0.0, 0.2), val=(0.7, 0.9), contrast=(0.6, 0.8))))
    # Building blocks: contiguous, varying setback and height; balconies and signs add relief.
    for side in (-1, 1):
        z = z0
        while z < z1:
            length = float(min(rng.uniform(6, 14), z1 - z))
            setback, height = float(rng.uniform(0, 1.5)), float(rng.uniform(8, 20))
            front = 7.5 + setback
            boxes.append(Box((side * (front + 6), -height / 2, z + length / 2), (12, height, length), 0,
                             _mat(rng, sat=(0.05, 0.4), val=(0.6, 1.0), tpm=64.0)))
            signs = int(rng.integers(0, 4))
            if length < 1.5:  # the street's last block can be a sliver: no sign fits on it
                signs = 0
            for _ in range(signs):
                w, y = float(rng.uniform(1.0, min(3.0, length - 0.5))), float(rng.uniform(3, height - 1))
                zc = float(rng.uniform(z + w / 2 + 0.2, z + length - w / 2 - 0.2))
                depth = float(rng.uniform(0.1, 0.8))
                boxes.append(Box((side * (front - depth / 2), -y, zc), (depth, rng.uniform(0.1, 0.9), w), 0,
                                 _mat(rng, sat=(0.2, 0.7))))
            z += length
    for side, zc in ((1, z0), (-1, z1)):  # end walls, far skyline
        boxes.append(Box((0, -35, zc - side * 2.5), (160, 70, 5), 0,
                         _mat(rng, sat=(0.05, 0.3), val=(0.6, 0.85), tpm=16.0)))
    for side in (-1, 1):  # side backdrops behind the blocks
        boxes.append(Box((side * 82.5, -35, (z0 + z1) / 2), (5, 70, z1 - z0), 0,
                         _mat(rng, sat=(0.05, 0.3), val=(0.6, 0.85), tpm=16.0)))
    rects.append(Rect.facing((0, -30, (z0 + z1) / 2), (0, 1, 0), 160, z1 - z0,
                             Material((0.75, 0.85, 1.0), 0.3, 4.0, 1.0)))  # cloud layer, unshaded
    # Parked cars on the right, lamp posts and trees (spheres) on both sidewalks.
    z = z0 + rng.uniform(5, 15)
    while z < z1 - 5:
        boxes.append(Box((4.3, -0.7, z), (1.7, 1.4, 4.2), float(rng.uniform(-3, 3)), _mat(rng, sat=(0.3, 0.8))))
        z += rng.uniform(10, 25)
    for side in (-1, 1):
        z = z0 + rng.uniform(2, 10)
        while z < z1 - 2:
            if rng.random() < 0.5:
                boxes.append(Box((side * 5.4, -2.4, z), (0.15, 4.5, 0.15), 0, _mat(rng, sat=(0.0, 0.3))))
            else:
                r = float(rng.uniform(0.3, 0.8))
                spheres.append(Sphere((side * 6.5, -0.15 - r, z), r, _mat(rng, sat=(0.3, 0.8))))
            z += rng.uniform(6, 16)
    return rects, boxes, spheres


def _moving(kind: str) -> MovingObject:
    if kind == "room":  # a ball rolling on a circle around the table cluster
        return MovingObject("sphere", (0.3, 0.3, 0.3), "circle", anchor=(0.0, -0.3, 0.0), radius=1.8, speed=0.4)
    # a car driving down the left lane, slower than the default forward camera
    return MovingObject("box", (1.8, 1.4, 4.2), "line", anchor=(-3.2, -0.7, 5.0), velocity=(0.0, 0.0, 4.0))


def make_scene(kind: str = "room", seed: int = 0, moving_object: bool = False) -> Scene:
    """A seeded built-in scene; ``moving_object=True`` adds a sphere (room) or box (street) on a known path."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"scene kind must be one of {SCENE_KINDS}, got {kind!r}")
    rng = np.random.default_rng([int(seed), SCENE_KINDS.index(kind)])
    rects, boxes, spheres = _room(rng) if kind == "room" else _street(rng)
    moving = _moving(kind) if moving_object else None
    moving_mats = None
    if moving is not None:
        moving_mats = [_mat(rng, sat=(0.5, 0.9), val=(0.8, 1.0)) for _ in range(moving.num_surfaces)]
    return Scene(rects, spheres, moving, boxes=boxes, kind=kind, seed=seed, stage=STAGES[kind],
                 moving_materials=moving_mats)


__all__ = ["SCENE_KINDS", "STAGES", "make_scene"]
