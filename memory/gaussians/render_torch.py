"""Pure-torch reference rasterizer for 3D Gaussians (the CPU path of ``render.py``).

It follows gsplat 1.5's rules so that both backends give the same image:

- EWA projection: the 3D covariance ``R S S^T R^T`` goes to the camera, then to
  pixels through the Jacobian of the perspective projection (evaluated at the
  mean, with the mean's direction clamped to 1.3x the field of view as gsplat
  does), plus a ``0.3 px^2`` low-pass (gsplat's ``eps2d``).
- Footprint: ``ceil(extend * sqrt(cov2d diagonal))`` pixels with
  ``extend = min(3.33, sqrt(2 ln(255 opacity)))``; Gaussians under 1/255 opacity,
  behind the near plane or off screen are culled.
- Compositing front to back per pixel in depth order:
  ``alpha = min(0.999, opacity * exp(-0.5 d^T conic d))``, skipped when below
  1/255; a pixel stops before the Gaussian that would take its transmittance to
  1e-4 or less.
- Outputs: colour ``sum(w c)`` (+ transmittance x background), alpha ``1 - T``,
  depth = alpha-normalised expected z ("ED" in gsplat), 0 where alpha is 0.

Instead of gsplat's 16x16 tiles (a GPU thread-block device), each Gaussian is
expanded to the pixels of its footprint box and the pairs are sorted per pixel,
in bands of image rows holding at most ``max_pairs`` pairs: the result is the
same (each pixel sees the same Gaussians in the same depth order) and memory
stays bounded for millions of Gaussians (about 150 B per pair in flight).

Pixel centres sit at integer coordinates (the project convention); gsplat puts
them at +0.5, which ``render.py`` accounts for by shifting the principal point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

EPS2D = 0.3  # px^2 added to every projected covariance (gsplat's eps2d)
ALPHA_MIN = 1.0 / 255.0  # smaller contributions are skipped
ALPHA_MAX = 0.999  # gsplat 1.5 clamps at 0.999 (the original 3DGS rasterizer at 0.99)
T_MIN = 1e-4  # a pixel is done before its transmittance would drop to this
MAX_EXTEND = 3.33  # footprint half-size in standard deviations
FOV_CLAMP = 0.3  # the Jacobian sees means at most this fraction of the half-FOV off screen
SIGMA_MAX = 20.0  # exp(-20) < 1/255: farther pixels get alpha 0 anyway
LOG_T_FLOOR = -30.0  # exp(-30) << T_MIN, still a normal float32


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[N, 3, 3]`` of w-first quaternions ``[N, 4]`` (normalised here)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


@dataclass
class ProjectedGaussians:
    """The Gaussians that reach the image, in front-to-back order."""

    means2d: torch.Tensor  # [M, 2] pixels, integer centres
    depths: torch.Tensor  # [M] camera z
    conics: torch.Tensor  # [M, 3] inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    radii: torch.Tensor  # [M, 2] int64 footprint half-size in pixels (x, y)
    opacities: torch.Tensor  # [M]
    colors: torch.Tensor  # [M, C]


def project_gaussians(
    means: torch.Tensor,  # [N, 3] world
    quats: torch.Tensor,  # [N, 4] w-first, local -> world
    scales: torch.Tensor,  # [N, 3] standard deviations
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, C]
    w2c: torch.Tensor,  # [4, 4] world -> camera
    K: torch.Tensor,  # [3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    chunk: int = 1 << 20,
) -> ProjectedGaussians:
    """EWA-project Gaussians into one pinhole camera and cull what cannot be seen."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # gsplat's tan-FOV limits, written in its +0.5-shifted pixel frame.
    lim_x_pos = (width - (cx + 0.5)) / fx + FOV_CLAMP * 0.5 * width / fx
    lim_x_neg = (cx + 0.5) / fx + FOV_CLAMP * 0.5 * width / fx
    lim_y_pos = (height - (cy + 0.5)) / fy + FOV_CLAMP * 0.5 * height / fy
    lim_y_neg = (cy + 0.5) / fy + FOV_CLAMP * 0.5 * height / fy
    R_cw, t_cw = w2c[:3, :3], w2c[:3, 3]
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, means.shape[0], chunk):
        sl = slice(start, start + chunk)
        pc = means[sl] @ R_cw.T + t_cw  # [n, 3]
        x, y, z = pc.unbind(-1)
        keep = (z > near_plane) & (z < far_plane) & (opacities[sl] >= ALPHA_MIN)
        idx = torch.nonzero(keep).squeeze(1)
        if idx.numel() == 0:
            continue
        x, y, z = x[idx], y[idx], z[idx]
        # Covariance in the camera: M M^T with M = R_cw R_gauss diag(s).
        M = R_cw @ quat_to_rotmat(quats[sl][idx]) * scales[sl][idx][:, None, :]  # [m, 3, 3]
        tx = z * (x / z).clamp(-lim_x_neg, lim_x_pos)
        ty = z * (y / z).clamp(-lim_y_neg, lim_y_pos)
        zero = torch.zeros_like(z)
        J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)],
                        dim=-1).reshape(-1, 2, 3)  # [m, 2, 3]
        JM = J @ M  # [m, 2, 3]
        cov = JM @ JM.transpose(1, 2)  # [m, 2, 2]
        a = cov[:, 0, 0] + EPS2D
        b = cov[:, 0, 1]
        c = cov[:, 1, 1] + EPS2D
        det = a * c - b * b
        op = opacities[sl][idx]
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(op / ALPHA_MIN)), max=MAX_EXTEND)
        rx = torch.ceil(extend * a.sqrt())
        ry = torch.ceil(extend * c.sqrt())
        u = fx * x / z + cx
        v = fy * y / z + cy
        # The image spans [-0.5, size - 0.5] around integer pixel centres.
        visible = ((det > 0) & (u + rx > -0.5) & (u - rx < width - 0.5)
                   & (v + ry > -0.5) & (v - ry < height - 0.5))
        vis = torch.nonzero(visible).squeeze(1)
        det = det[vis].clamp(min=1e-10)
        conic = torch.stack([c[vis] / det, -b[vis] / det, a[vis] / det], dim=-1)
        parts.append((
            torch.stack([u[vis], v[vis]], dim=-1), z[vis], conic,
            torch.stack([rx[vis], ry[vis]], dim=-1).long(), op[vis], colors[sl][idx][vis],
        ))
    if not parts:
        C = colors.shape[1]
        empty = means.new_zeros
        return ProjectedGaussians(empty((0, 2)), empty((0,)), empty((0, 3)),
                                  torch.zeros((0, 2), dtype=torch.long, device=means.device),
                                  empty((0,)), empty((0, C)))
    cols = [torch.cat(p) for p in zip(*parts)]
    order = torch.argsort(cols[1], stable=True)  # front to back
    return ProjectedGaussians(*(col[order] for col in cols))


def _row_bands(y0: torch.Tensor, y1: torch.Tensor, nx: torch.Tensor, height: int, budget: int) -> list[tuple[int, int]]:
    """Split image rows into bands of at most ``budget`` pixel-Gaussian pairs (a row is never split)."""
    per_row = torch.zeros(height + 1, dtype=torch.float64, device=nx.device)
    per_row.index_add_(0, y0, nx.double())
    per_row.index_add_(0, y1 + 1, -nx.double())
    cum = torch.cumsum(torch.cumsum(per_row, 0)[:height], 0).cpu().numpy()  # pairs in rows [0, r]
    bands, start, base = [], 0, 0.0
    for r in range(height):
        if r > start and cum[r] - base > budget:
            bands.append((start, r))
            start, base = r, cum[r - 1]
    bands.append((start, height))
    return bands


def rasterize(
    proj: ProjectedGaussians,
    width: int,
    height: int,
    background: torch.Tensor | None = None,  # [C]
    max_pairs: int = 1 << 21,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite projected Gaussians: colour ``[H, W, C]``, expected depth ``[H, W]``, alpha ``[H, W]``.

    Each Gaussian is evaluated on the pixels of its footprint box (outside it alpha is
    below 1/255, so gsplat's tiles would skip it too); the pixel-Gaussian pairs of a band
    of rows are sorted by pixel, keeping depth order, and composited with a segmented
    log-transmittance sum. Bands hold at most ``max_pairs`` pairs, so memory stays
    bounded for any number of Gaussians.
    """
    C = proj.colors.shape[1]
    dtype, dev = proj.means2d.dtype, proj.means2d.device
    acc = torch.zeros(height * width, C + 2, dtype=dtype, device=dev)  # colour, depth, alpha
    # Footprint boxes of integer pixel centres, clipped to the image.
    u, v = proj.means2d.unbind(-1)
    x0 = torch.ceil(u - proj.radii[:, 0]).clamp(min=0).long()
    x1 = torch.floor(u + proj.radii[:, 0]).clamp(max=width - 1).long()
    y0 = torch.ceil(v - proj.radii[:, 1]).clamp(min=0).long()
    y1 = torch.floor(v + proj.radii[:, 1]).clamp(max=height - 1).long()
    on = torch.nonzero((x1 >= x0) & (y1 >= y0)).squeeze(1)  # still in depth order
    x0, x1, y0, y1 = x0[on], x1[on], y0[on], y1[on]
    nx = x1 - x0 + 1
    values = torch.cat([proj.colors, proj.depths[:, None]], dim=-1)[on]  # [M', C + 1]
    mu, con, op = proj.means2d[on], proj.conics[on], proj.opacities[on]
    bands = _row_bands(y0, y1, nx, height, max_pairs) if on.numel() else []
    for top, bottom in tqdm(bands, desc="rasterize", unit="band", disable=not progress, leave=False):
        sel = torch.nonzero((y0 < bottom) & (y1 >= top)).squeeze(1)
        if sel.numel() == 0:
            continue
        by0 = y0[sel].clamp(min=top)
        ny = y1[sel].clamp(max=bottom - 1) - by0 + 1
        n = nx[sel] * ny
        owner = torch.repeat_interleave(sel, n)  # [P], front to back
        k = torch.arange(owner.numel(), device=dev) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        w_row = nx[owner]
        px = x0[owner] + k % w_row
        py = torch.repeat_interleave(by0, n) + torch.div(k, w_row, rounding_mode="floor")
        # A stable sort by pixel keeps each pixel's list front to back.
        pixel, order = torch.sort(py * width + px, stable=True)
        owner, px, py = owner[order], px[order], py[order]
        dx = mu[owner, 0] - px.to(dtype)
        dy = mu[owner, 1] - py.to(dtype)
        c = con[owner]
        sigma = (0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) + c[:, 1] * dx * dy).clamp_(min=0.0, max=SIGMA_MAX)
        alpha = (op[owner] * torch.exp(-sigma)).clamp_(max=ALPHA_MAX)
        alpha = torch.where((sigma < SIGMA_MAX) & (alpha >= ALPHA_MIN), alpha, 0.0)
        # log T after each pair, restarted at every pixel (float64: the running sum is long).
        log1m = torch.log1p(-alpha.double())
        cum = torch.cumsum(log1m, 0)
        first = torch.ones_like(pixel, dtype=torch.bool)
        first[1:] = pixel[1:] != pixel[:-1]
        seg = torch.cumsum(first, 0) - 1
        base = (cum - log1m)[first][seg]  # log T before each pixel's first pair (relative)
        log_after = (cum - base).clamp_(min=LOG_T_FLOOR)
        t_after = torch.exp(log_after)
        t_before = torch.exp((cum - log1m - base).clamp_(min=LOG_T_FLOOR))
        # Transmittance only falls, so the pairs above T_MIN are a prefix of each pixel's list.
        weight = torch.where(t_after > T_MIN, t_before - t_after, 0.0).to(dtype)  # alpha * T before
        contrib = torch.cat([values[owner], torch.ones_like(weight)[:, None]], dim=-1) * weight[:, None]
        acc.index_add_(0, pixel, contrib)
    acc = acc.reshape(height, width, C + 2)
    alpha_img = acc[..., C + 1].clamp(max=1.0)
    color = acc[..., :C]
    if background is not None:
        color = color + (1.0 - alpha_img)[..., None] * background.to(dtype)
    depth = acc[..., C] / alpha_img.clamp(min=1e-10)
    return color, depth, alpha_img


def render_torch(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] w-first
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, C]
    w2c: torch.Tensor,  # [4, 4]
    K: torch.Tensor,  # [3, 3]
    width: int,
    height: int,
    background: torch.Tensor | None = None,  # [C]
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render one view on any device torch runs on: colour ``[H, W, C]``, depth ``[H, W]``, alpha ``[H, W]``."""
    with torch.no_grad():
        proj = project_gaussians(means, quats, scales, opacities, colors, w2c, K, width, height,
                                 near_plane=near_plane, far_plane=far_plane)
        return rasterize(proj, width, height, background=background, progress=progress)
