"""Dense depth by triangulating DIS optical flow against neighbouring views.

For each view, flow is computed forward and backward to up to two neighbours
chosen for their baseline; every pixel that survives the forward-backward
check is triangulated in closed form along its own ray. Two neighbours give a
multi-view consistency check: where both estimates agree the pixel is
confident, where they disagree it is not.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from recon.features import grey
from recon.ingest.transforms import plan_resize


@dataclass
class DenseConfig:
    # Baseline / median sparse depth of the view, near and far pair. Full-size features put more
    # points on far surfaces (a larger median), so wider ratios pick pairs too far apart for the
    # flow (docs/default_backend.md, "Dense depth").
    target_baseline_ratios: tuple[float, ...] = (0.05, 0.12)
    min_baseline_ratio: float = 0.015
    max_fb_error_px: float = 1.0
    min_angle_deg: float = 0.75
    agree_rel: float = 0.05  # two neighbours' depths agree within this fraction
    single_view_trust: float = 0.45  # confidence factor (< 0.5) for pixels no second view confirms
    full_conf_angle_deg: float = 4.0
    # Flow runs on a copy at most max_side px (depth is upsampled after) with the finest pyramid
    # level at that copy's own resolution: most of the full-size accuracy for a quarter of its cost
    # (docs/default_backend.md has the table).
    max_side: int = 256
    dis_preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST
    dis_finest_scale: int | None = 0  # None: the preset's


def dense_inputs(images: list[np.ndarray], K: np.ndarray, max_side: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Images [h, w, 3] and intrinsics for the dense stage, shrunk as ingest would so the longest side
    is <= ``max_side``."""
    plan = plan_resize((images[0].shape[1], images[0].shape[0]), max_side)
    if plan.is_identity:
        return images, K
    return [plan.apply(im) for im in images], plan.pixel_map @ K


def upsample_depth(depth: np.ndarray, conf: np.ndarray, W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth and confidence [S, h, w] -> [S, H, W] by nearest neighbour: never a depth between two surfaces."""
    if depth.shape[1:] == (H, W):
        return depth, conf
    up = lambda a: np.stack([cv2.resize(x, (W, H), interpolation=cv2.INTER_NEAREST) for x in a])  # noqa: E731
    return up(depth), up(conf)


class FlowCache:
    """DIS flow between views of the current window, computed once per ordered pair."""

    def __init__(self, images: list[np.ndarray], cfg: DenseConfig, threads: int = 2):
        self._grey = [grey(im) for im in images]
        self._cfg = cfg
        self._threads = threads
        self._flows: dict[tuple[int, int], np.ndarray] = {}

    def _calc(self, pair: tuple[int, int]) -> np.ndarray:
        dis = cv2.DISOpticalFlow_create(self._cfg.dis_preset)  # one per call: instances are not thread-safe
        if self._cfg.dis_finest_scale is not None:
            dis.setFinestScale(self._cfg.dis_finest_scale)
        return dis.calc(self._grey[pair[0]], self._grey[pair[1]], None)

    def precompute(self, pairs: list[tuple[int, int]]) -> None:
        """Compute many flows at once on ``threads`` threads (OpenCV releases the GIL)."""
        todo = sorted({p for p in pairs if p not in self._flows})
        with ThreadPoolExecutor(self._threads) as pool:
            for pair, f in zip(todo, pool.map(self._calc, todo)):
                self._flows[pair] = f

    def flow(self, i: int, j: int) -> np.ndarray:
        """Flow [H, W, 2] taking pixels of view i to view j."""
        key = (i, j)
        if key not in self._flows:
            self._flows[key] = self._calc(key)
        return self._flows[key]


def choose_neighbours(i: int, centres: np.ndarray, median_depth: float, cfg: DenseConfig) -> list[int]:
    """Views before and after ``i`` whose baselines are closest to each target ratio.

    A short baseline keeps flow reliable on near surfaces; a long one gives far
    surfaces enough triangulation angle. Fusion picks per pixel.
    """
    out: list[int] = []
    for side in (range(i - 1, -1, -1), range(i + 1, len(centres))):
        cand = [(j, np.linalg.norm(centres[j] - centres[i]) / max(median_depth, 1e-9)) for j in side]
        cand = [(j, r) for j, r in cand if r >= cfg.min_baseline_ratio]
        for target in cfg.target_baseline_ratios:
            if cand:
                j, r = min(cand, key=lambda jr: abs(np.log(jr[1] / target)))
                out.append(j)
                # The next (longer) target looks further out only: where frames are far apart both
                # targets would otherwise pick the same neighbour and lose the second baseline.
                cand = [(k, q) for k, q in cand if q > r]
    # Fusion needs two views to cross-check: at the window's ends both may lie on one side.
    by_baseline = np.argsort(-np.linalg.norm(centres - centres[i], axis=1))
    for j in by_baseline:
        if len(out) >= 2:
            break
        if j != i and int(j) not in out:
            out.append(int(j))
    return out


def triangulate_flow(flow_ij: np.ndarray, flow_ji: np.ndarray, K: np.ndarray,
                     w2c_i: np.ndarray, w2c_j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel z-depth in view i from flow to view j: (depth [H, W], fb error [H, W], angle deg [H, W]).

    Closed form along each pixel's ray: with a = K^-1 (u, v, 1) and the point
    X_j = depth * R a + t in camera j, the two projection equations are linear
    in depth; their least-squares solution is taken. Elementwise float32: this
    runs on every pixel of every neighbour pair.
    """
    H, W = flow_ij.shape[:2]
    u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    uj = u + flow_ij[..., 0]
    vj = v + flow_ij[..., 1]
    back = cv2.remap(flow_ji, uj, vj, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    fb = np.hypot(flow_ij[..., 0] + back[..., 0], flow_ij[..., 1] + back[..., 1])
    inside = (uj >= 0) & (uj <= W - 1) & (vj >= 0) & (vj <= H - 1)
    fb[~inside] = np.inf

    fx, fy, cx, cy = (np.float32(K[0, 0]), np.float32(K[1, 1]), np.float32(K[0, 2]), np.float32(K[1, 2]))
    rel = w2c_j @ np.linalg.inv(w2c_i)  # camera i -> camera j
    R = rel[:3, :3].astype(np.float32)
    t = rel[:3, 3].astype(np.float32)
    ax = (u - cx) / fx  # ray of pixel (u, v) in camera i, z = 1
    ay = (v - cy) / fy
    bx = (uj - cx) / fx  # normalised coordinates of the match in camera j
    by = (vj - cy) / fy
    rx = R[0, 0] * ax + R[0, 1] * ay + R[0, 2]
    ry = R[1, 0] * ax + R[1, 1] * ay + R[1, 2]
    rz = R[2, 0] * ax + R[2, 1] * ay + R[2, 2]
    # depth * (r_x - x_j r_z) = x_j t_z - t_x, and the y twin.
    cx_ = rx - bx * rz
    cy_ = ry - by * rz
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = (cx_ * (bx * t[2] - t[0]) + cy_ * (by * t[2] - t[1])) / (cx_ * cx_ + cy_ * cy_)
        # Triangulation angle at the point between the rays from both centres.
        cj = -R.T @ t  # centre of camera j in camera i
        X0, X1, X2 = ax * depth, ay * depth, depth
        d0, d1, d2 = X0 - cj[0], X1 - cj[1], X2 - cj[2]
        cos = (X0 * d0 + X1 * d1 + X2 * d2) / np.sqrt((X0 * X0 + X1 * X1 + X2 * X2) * (d0 * d0 + d1 * d1 + d2 * d2))
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    valid = np.isfinite(depth) & (depth > 0) & (depth * rz + t[2] > 0)
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    return depth, fb.astype(np.float32), np.nan_to_num(angle, nan=0.0).astype(np.float32)


def dense_depth(i: int, flows: FlowCache, K: np.ndarray, w2c: list[np.ndarray],
                neighbours: list[int], depth_range: tuple[float, float],
                cfg: DenseConfig) -> tuple[np.ndarray, np.ndarray]:
    """Depth [H, W] and confidence in [0, 1] [H, W] of view i, fused over its neighbours.

    Per pixel, the estimate with the largest weight (triangulation angle and
    flow consistency) is the reference; estimates from other neighbours that
    agree with it within ``agree_rel`` are averaged in. A pixel confirmed by
    two views is trusted fully, one seen by a single view only partly.
    """
    shape = flows._grey[i].shape
    if not neighbours:
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    ds, ws = [], []
    for j in neighbours:
        d, fb, ang = triangulate_flow(flows.flow(i, j), flows.flow(j, i), K, w2c[i], w2c[j])
        ok = (d > depth_range[0]) & (d < depth_range[1]) & (fb < cfg.max_fb_error_px) & (ang > cfg.min_angle_deg)
        w = np.clip(ang / cfg.full_conf_angle_deg, 0, 1) * np.exp(-(fb / cfg.max_fb_error_px) ** 2)
        ds.append(np.where(ok, d, 0.0))
        ws.append(np.where(ok, w, 0.0))
    d = np.stack(ds)  # [N, H, W]
    w = np.stack(ws)
    best = np.argmax(w, axis=0)
    ref = np.take_along_axis(d, best[None], 0)[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(d - ref[None]) / np.where(ref > 0, ref, np.inf)[None]
    agree = (w > 0) & (rel < cfg.agree_rel)
    wa = np.where(agree, w, 0.0)
    total = wa.sum(0)
    fused = np.where(total > 0, (wa * d).sum(0) / np.where(total > 0, total, 1), 0.0)
    n_agree = agree.sum(0)
    w_ref = np.take_along_axis(w, best[None], 0)[0]
    # Confirmed by two views: confidence in [0.5, 1]; seen by one: below 0.5.
    conf = np.where(n_agree >= 2, 0.5 + 0.5 * np.clip(0.5 * total, 0, 1), cfg.single_view_trust * w_ref)
    return fused.astype(np.float32), conf.astype(np.float32)
