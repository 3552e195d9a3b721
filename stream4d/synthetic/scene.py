"""Synthetic scenes with exact geometry: textured rectangles, boxes, spheres and one optional moving object.

World frame: metres, y points down (OpenCV-like, so an upright camera looking
along +z has identity rotation), floors at y = 0 and "up" is -y. Rectangles
(walls, floors, box faces) are ray cast with Open3D's Embree scene and their
hit distance is then recomputed exactly in float64 from the plane equation;
spheres and the moving object are intersected analytically. Surfaces are
coloured from the shared procedural atlas (``textures.py``) at coordinates in
metres on the surface, times a per-surface tint, with view-independent
Lambertian shading, so every surface point has one colour in every view.
"""

from __future__ import annotations

import threading

import numpy as np

from stream4d.synthetic.primitives import (
    WORLD_DOWN,
    Box,
    Material,
    MovingObject,
    Rect,
    Sphere,
    Stage,
    as_unit,
    as_vec3,
)
from stream4d.synthetic.raycast import (
    EPS,
    Hits,
    all_or_indices,
    dot_rows,
    ray_box,
    ray_sphere,
    rows_times,
    sphere_uv,
    unit_rows32,
)
from stream4d.synthetic.textures import ATLAS_SIZE, sample_pyramid, texture_pyramid

_CHUNK = 64  # rays per chunk in the coarse sphere culling


def _random_material(rng: np.random.Generator) -> Material:
    tint = rng.uniform(0.55, 1.0, 3)
    return Material(tint=tuple(tint / tint.max() * rng.uniform(0.8, 1.0)), contrast=float(rng.uniform(0.7, 1.0)))


def _moving_extents(mov: MovingObject) -> list[tuple[float, float]]:
    """Texture extents (metres) of the moving object's surfaces, in surface-id order."""
    size = np.asarray(mov.size, np.float64)
    if mov.shape == "sphere":
        return [(2 * np.pi * size[0], np.pi * size[0])]
    out = []
    for axis in range(3):
        b, c = (x for x in range(3) if x != axis)
        out += [(size[b], size[c])] * 2
    return out


class Scene:
    """Static rectangles and spheres plus an optional moving object, each surface with a material.

    Surface ids: rectangles ``[0, R)`` (``rects`` then the faces of ``boxes``),
    spheres ``[R, R + S)``, then the moving object's surfaces (1 for a sphere,
    6 box faces ordered -x, +x, -y, +y, -z, +z). Surfaces without a material get
    a seeded random one; ``seed`` also picks the texture atlas and each
    surface's window in it. ``stage`` tells ``make_trajectory`` where cameras
    may go; ``light_dir`` points towards the light; ``exposure`` scales all colours.
    """

    def __init__(self, rects: list[Rect] = (), spheres: list[Sphere] = (), moving: MovingObject | None = None,
                 *, boxes: list[Box] = (), kind: str = "custom", seed: int = 0, stage: Stage | None = None,
                 light_dir=(0.35, -1.0, -0.45), exposure: float = 1.6,
                 moving_materials: list[Material] | None = None) -> None:
        self.kind = kind
        self.seed = int(seed)
        self.rects: list[Rect] = list(rects) + [f for box in boxes for f in box.faces()]
        self.spheres: list[Sphere] = list(spheres)
        self.moving = moving
        self.stage = stage
        self.light_dir = as_unit("light_dir", light_dir)  # towards the light
        self.exposure = float(exposure)
        if not self.rects and not self.spheres:
            raise ValueError("a Scene needs at least one rectangle, box or sphere")
        mat_rng = np.random.default_rng([self.seed, 0x3A7])  # materials of surfaces given none
        tex_rng = np.random.default_rng([self.seed, 0x5CE7E])  # atlas windows
        mats = [r.material for r in self.rects] + [s.material for s in self.spheres]
        extents = [(r.width, r.height) for r in self.rects] + [(2 * np.pi * s.radius, np.pi * s.radius)
                                                               for s in self.spheres]
        if moving is not None:
            given = list(moving_materials or [])
            if given and len(given) != moving.num_surfaces:
                raise ValueError(f"moving_materials needs {moving.num_surfaces} entries for a {moving.shape}, "
                                 f"got {len(given)}")
            mats += given or [None] * moving.num_surfaces
            extents += _moving_extents(moving)
        mats = [m if m is not None else _random_material(mat_rng) for m in mats]
        self.materials = mats
        self._tint = np.array([m.tint for m in mats], np.float32)  # [N, 3]
        self._contrast = np.array([m.contrast for m in mats], np.float32)  # [N]
        self._tpm = np.array([m.texels_per_metre for m in mats], np.float64)  # [N]
        self._ambient = np.array([m.ambient for m in mats], np.float32)  # [N]
        # Each surface reads its own window of the atlas; it fits without wrapping when small enough.
        span = np.array(extents) * self._tpm[:, None]
        room = np.maximum(ATLAS_SIZE - span, 0.0)
        self._tex_offset = tex_rng.uniform(0.0, 1.0, (len(mats), 2)) * np.where(room > 0, room, ATLAS_SIZE)
        R = len(self.rects)
        self._rect_origin = np.array([r.origin for r in self.rects]).reshape(R, 3)
        self._rect_u = np.array([r.u for r in self.rects]).reshape(R, 3)
        self._rect_v = np.array([r.v for r in self.rects]).reshape(R, 3)
        self._rect_n = np.array([r.normal for r in self.rects]).reshape(R, 3)
        self._rect_nuv = np.stack([self._rect_n, self._rect_u, self._rect_v], axis=1)  # [R, 3, 3]
        self._sphere_c = np.array([s.center for s in self.spheres]).reshape(-1, 3)
        self._sphere_r = np.array([s.radius for s in self.spheres], np.float64)
        self._raycaster = None
        self._lock = threading.Lock()
        self.nthreads = 1  # Embree threads per cast; 0 = all cores

    def __getstate__(self) -> dict:
        # The Embree scene and the lock cannot be pickled; they are rebuilt on demand.
        state = self.__dict__.copy()
        state["_raycaster"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- geometry
    @property
    def num_surfaces(self) -> int:
        return len(self.materials)

    @property
    def moving_surface_ids(self) -> np.ndarray:
        """Surface ids of the moving object (empty without one)."""
        start = len(self.rects) + len(self.spheres)
        return np.arange(start, self.num_surfaces)

    def moving_pose(self, time: float) -> np.ndarray | None:
        """Object-to-world [4, 4] of the moving object at ``time``, None without one."""
        return None if self.moving is None else self.moving.pose(time)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (min [3], max [3]) of the static geometry."""
        pts = [r.corners() for r in self.rects]
        pts += [np.stack([s.center - s.radius, s.center + s.radius]) for s in self.spheres]
        allp = np.concatenate(pts)
        return allp.min(axis=0), allp.max(axis=0)

    def _rect_raycaster(self):
        with self._lock:
            if self._raycaster is None:
                import open3d as o3d  # slow import; only rendering needs it

                verts = np.concatenate([r.corners() for r in self.rects]).astype(np.float32)  # [4R, 3]
                base = np.arange(len(self.rects), dtype=np.uint32)[:, None] * 4
                tris = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=1).reshape(-1, 3)  # [2R, 3]
                caster = o3d.t.geometry.RaycastingScene(nthreads=1)
                caster.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris.astype(np.uint32)))
                self._raycaster = caster
            return self._raycaster

    def intersect(self, origin, dirs: np.ndarray, time: float = 0.0) -> Hits:
        """First hits of rays ``origin [3] + t * dirs [M, 3]`` at ``time`` (moves the moving object)."""
        o = as_vec3("ray origin", origin)
        d = np.asarray(dirs, np.float64)
        if d.ndim != 2 or d.shape[1] != 3:
            raise ValueError(f"ray directions must be [M, 3], got {d.shape}")
        m = d.shape[0]
        hits = Hits(np.full(m, np.inf), np.full(m, -1, np.int32), np.zeros((m, 3)), np.zeros((m, 2)))
        if m == 0:
            return hits
        if self.rects:
            self._intersect_rects(o, d, hits)
        unit32 = unit_rows32(d)
        if self.spheres:
            self._intersect_spheres(o, d, unit32, hits)
        if self.moving is not None:
            self._intersect_moving(o, d, time, hits, unit32)
        flip = dot_rows(hits.normal, d) > 0
        hits.normal[flip] *= -1.0
        return hits

    @staticmethod
    def _record(hits: Hits, idx, t, surface, normal, uv) -> None:
        hits.t[idx] = t
        hits.surface[idx] = surface
        hits.normal[idx] = normal
        hits.uv[idx] = uv

    def _intersect_rects(self, o: np.ndarray, d: np.ndarray, hits: Hits) -> None:
        import open3d as o3d

        rays = np.empty((d.shape[0], 6), np.float32)
        rays[:, :3] = o
        rays[:, 3:] = d
        out = self._rect_raycaster().cast_rays(o3d.core.Tensor(rays), nthreads=self.nthreads)
        t32 = out["t_hit"].numpy()
        idx = all_or_indices(np.isfinite(t32))
        rid = out["primitive_ids"].numpy()[idx].astype(np.int64) // 2
        # Embree works in float32; the plane equation gives the exact float64 distance:
        # t = n.(origin_r - o) / n.d, and uv = (o + t d - origin_r).(u, v).
        rel_o = o - self._rect_origin  # [R, 3]
        offset = np.stack([-np.einsum("ij,ij->i", self._rect_n, rel_o), np.einsum("ij,ij->i", self._rect_u, rel_o),
                           np.einsum("ij,ij->i", self._rect_v, rel_o)], axis=1)[rid]  # [M, 3]
        along = np.einsum("mij,mj->mi", self._rect_nuv[rid], d[idx])  # [M, 3]: d.n, d.u, d.v
        t = offset[:, 0] / along[:, 0]
        uv = offset[:, 1:] + t[:, None] * along[:, 1:]
        self._record(hits, idx, t, rid, self._rect_n[rid], uv)

    def _intersect_spheres(self, o: np.ndarray, d: np.ndarray, unit32: np.ndarray, hits: Hits) -> None:
        """All static spheres at once: cone tests pick (ray, sphere) candidates, exact roots decide.

        Rays are tested in chunks of ``_CHUNK`` consecutive rays first (a pixel
        row segment for camera rays): a chunk's bounding cone rules out most
        spheres, so per-ray tests only run where a sphere can be.
        """
        oc = self._sphere_c - o  # [S, 3]
        dist = np.linalg.norm(oc, axis=1)
        axes = (oc / dist[:, None]).astype(np.float32)  # [S, 3]
        # Angular radius of each sphere as seen from o; a camera inside a sphere sees it everywhere.
        alpha = np.where(dist <= self._sphere_r, np.pi,
                         np.arcsin(np.clip(self._sphere_r / np.maximum(dist, 1e-12), 0.0, 1.0)))
        m = len(unit32)
        chunks = -(-m // _CHUNK)
        padded = np.concatenate([unit32, np.repeat(unit32[-1:], chunks * _CHUNK - m, axis=0)])
        blocks = padded.reshape(chunks, _CHUNK, 3)
        centre = blocks.mean(axis=1)
        centre /= np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), 1e-12)
        spread = np.arccos(np.clip(np.einsum("ckj,cj->ck", blocks, centre).min(axis=1), -1.0, 1.0))  # [C]
        gap = np.arccos(np.clip(centre @ axes.T, -1.0, 1.0))  # [C, S]
        chunk, sph = np.nonzero(gap <= spread[:, None] + alpha[None, :] + 1e-3)
        ray = (chunk[:, None] * _CHUNK + np.arange(_CHUNK)).reshape(-1)
        sph = np.repeat(sph, _CHUNK)
        real = ray < m
        ray, sph = ray[real], sph[real]
        cos_alpha = (np.cos(alpha) - 1e-5).astype(np.float32)
        near_axis = np.einsum("ij,ij->i", unit32[ray], axes[sph]) >= cos_alpha[sph]
        ray, sph = ray[near_axis], sph[near_axis]
        dd = d[ray]
        a = dot_rows(dd, dd)
        b = dot_rows(dd, oc[sph])
        disc = b * b - a * (dist[sph] ** 2 - self._sphere_r[sph] ** 2)
        ok = disc >= 0
        ray, sph, a, b, sq = ray[ok], sph[ok], a[ok], b[ok], np.sqrt(disc[ok])
        near, far = (b - sq) / a, (b + sq) / a
        t = np.where(near > EPS, near, far)
        ok = (t > EPS) & (t < hits.t[ray])
        ray, sph, t = ray[ok], sph[ok], t[ok]
        # Nearest sphere per ray: sort by (ray, t) and keep each ray's first entry.
        order = np.lexsort((t, ray))
        ray, sph, t = ray[order], sph[order], t[order]
        first = np.ones(len(ray), bool)
        first[1:] = ray[1:] != ray[:-1]
        ray, sph, t = ray[first], sph[first], t[first]
        radius = self._sphere_r[sph]
        local = (o + t[:, None] * d[ray] - self._sphere_c[sph]) / radius[:, None]
        hits.t[ray] = t
        hits.surface[ray] = len(self.rects) + sph
        hits.normal[ray] = local
        hits.uv[ray] = sphere_uv(local, radius)

    def _intersect_moving(self, o: np.ndarray, d: np.ndarray, time: float, hits: Hits, unit32: np.ndarray) -> None:
        mov = self.moving
        T = mov.pose(time)
        R, c = T[:3, :3], T[:3, 3]
        cand, _ = ray_sphere(o, d, c, mov.bounding_radius, unit32)  # cheap cull by the bounding sphere
        if cand.size == 0:
            return
        ol = R.T @ (o - c)
        dl = rows_times(d[cand], R)  # rows: R^T d
        first = int(self.moving_surface_ids[0])
        if mov.shape == "sphere":
            r = float(mov.size[0])
            sub, t = ray_sphere(ol, dl, np.zeros(3), r)
            local = (ol + t[:, None] * dl[sub]) / r
            closer = t < hits.t[cand[sub]]
            sub, t, local = sub[closer], t[closer], local[closer]
            self._record(hits, cand[sub], t, first, rows_times(local, R.T), sphere_uv(local, r))
            return
        half = mov.half_size
        sub, t, axis = ray_box(ol, dl, half)
        closer = t < hits.t[cand[sub]]
        sub, t, axis = sub[closer], t[closer], axis[closer]
        p = ol + t[:, None] * dl[sub]
        side = (p[np.arange(len(sub)), axis] > 0).astype(np.int64)
        n_local = np.zeros((len(sub), 3))
        n_local[np.arange(len(sub)), axis] = 2.0 * side - 1.0
        others = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        rows = np.arange(len(sub))[:, None]
        uv = p[rows, others] + half[others]
        self._record(hits, cand[sub], t, first + 2 * axis + side, rows_times(n_local, R.T), uv)

    # ----------------------------------------------------------------- appearance
    def albedo(self, surface: np.ndarray, uv: np.ndarray, lod: np.ndarray | float = 0.0) -> np.ndarray:
        """Unlit colour float32 [M, 3] of surfaces ``surface [M]`` at ``uv [M, 2]`` metres, atlas level ``lod``."""
        surface = np.asarray(surface, np.int64)
        tex = self._tex_offset[surface] + uv * self._tpm[surface, None]
        lod = np.broadcast_to(np.asarray(lod, np.float64), surface.shape)
        atlas = sample_pyramid(texture_pyramid(self.seed), tex[:, 0], tex[:, 1], lod)
        k = self._contrast[surface, None]
        return self._tint[surface] * ((1.0 - k) * 0.5 + k * atlas)

    def lighting(self, surface: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Lambertian light factor float32 [M] (ambient + diffuse, view independent)."""
        amb = self._ambient[np.asarray(surface, np.int64)]
        diffuse = np.clip(dot_rows(normal, self.light_dir), 0.0, 1.0).astype(np.float32)
        return (amb + (1.0 - amb) * diffuse) * self.exposure

    def shade(self, hits: Hits, dirs: np.ndarray, focal: float) -> np.ndarray:
        """RGB float32 [M, 3] in [0, 1] of ``hits`` (black where nothing was hit).

        ``focal`` is the focal length in pixels of the sample grid the rays come
        from; it sets each sample's footprint and so the atlas level (mip-mapping).
        """
        rgb = np.zeros((hits.t.shape[0], 3), np.float32)
        idx = all_or_indices(hits.hit)
        if isinstance(idx, np.ndarray) and idx.size == 0:
            return rgb
        d = dirs[idx]
        dnorm = np.sqrt(dot_rows(d, d))
        cos_view = np.abs(dot_rows(hits.normal[idx], d)) / dnorm
        surface = hits.surface[idx]
        # Metres per sample across the ray, widened by the surface tilt (geometric mean of the two axes).
        footprint = hits.t[idx] / (focal * dnorm) / np.sqrt(np.maximum(cos_view, 0.02))
        lod = np.log2(np.maximum(footprint * self._tpm[surface], 1e-6))
        colour = self.albedo(surface, hits.uv[idx], lod) * self.lighting(surface, hits.normal[idx])[:, None]
        rgb[idx] = np.clip(colour, 0.0, 1.0)
        return rgb

    # ----------------------------------------------------------------- sampling
    def surface_points(self, n: int, seed: int = 0, bounds: tuple | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Area-uniform samples of the static geometry: points float64 [n, 3], colours float32 [n, 3] in [0, 1].

        Colours are what a camera sees there (albedo x view-independent light).
        ``bounds = (min [3], max [3])`` keeps only samples inside that box; use
        it for the street, whose cloud layer and far backdrops hold most of the area.
        """
        if int(n) <= 0:
            raise ValueError(f"surface_points needs n > 0, got {n}")
        n = int(n)
        lo, hi = (np.full(3, -np.inf), np.full(3, np.inf)) if bounds is None else (
            as_vec3("bounds min", bounds[0]), as_vec3("bounds max", bounds[1]))
        areas = np.array([r.area for r in self.rects] + [4 * np.pi * s.radius ** 2 for s in self.spheres])
        boxes = [(c.min(0), c.max(0)) for c in (r.corners() for r in self.rects)]
        boxes += [(s.center - s.radius, s.center + s.radius) for s in self.spheres]
        overlaps = np.array([np.all(bmin <= hi) and np.all(bmax >= lo) for bmin, bmax in boxes])
        weights = np.where(overlaps, areas, 0.0)
        if weights.sum() <= 0:
            raise ValueError(f"surface_points: no static surface lies inside bounds {bounds}")
        rng = np.random.default_rng(seed)
        pts, ids, uvs, nrm = [], [], [], []
        got, tries = 0, 0
        while got < n:
            tries += 1
            if tries > 200:
                raise ValueError(f"surface_points: bounds {bounds} hold too little surface to sample {n} points")
            m = max(2 * (n - got), 1024)
            surf = rng.choice(len(weights), size=m, p=weights / weights.sum())
            p, uv, normal = self._sample_on(surf, rng)
            inside = np.all((p >= lo) & (p <= hi), axis=1)
            pts.append(p[inside])
            ids.append(surf[inside])
            uvs.append(uv[inside])
            nrm.append(normal[inside])
            got += int(inside.sum())
        p, s, uv, normal = (np.concatenate(a)[:n] for a in (pts, ids, uvs, nrm))
        colours = self.albedo(s, uv, 0.0) * self.lighting(s, normal)[:, None]
        return p, np.clip(colours, 0.0, 1.0).astype(np.float32)

    def _sample_on(self, surf: np.ndarray, rng: np.random.Generator):
        """Uniform points, uv and front normals on static surfaces ``surf [m]``."""
        m = len(surf)
        p, uv, normal = np.zeros((m, 3)), np.zeros((m, 2)), np.zeros((m, 3))
        R = len(self.rects)
        is_rect = surf < R
        if is_rect.any():
            rid = surf[is_rect]
            size = np.array([[r.width, r.height] for r in self.rects])[rid]
            uv[is_rect] = rng.random((len(rid), 2)) * size
            p[is_rect] = (self._rect_origin[rid] + uv[is_rect, :1] * self._rect_u[rid]
                          + uv[is_rect, 1:] * self._rect_v[rid])
            normal[is_rect] = self._rect_n[rid]
        for k, sphere in enumerate(self.spheres):
            sel = surf == R + k
            if sel.any():
                dirs = rng.standard_normal((int(sel.sum()), 3))
                dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
                p[sel] = sphere.center + sphere.radius * dirs
                uv[sel] = sphere_uv(dirs, sphere.radius)
                normal[sel] = dirs
        return p, uv, normal


__all__ = ["Scene", "Hits", "Material", "Rect", "Box", "Sphere", "MovingObject", "Stage", "WORLD_DOWN"]
