"""Procedural texture atlas shared by every surface of a synthetic scene.

One seeded RGB atlas holds content at every scale (1/f spectral noise, painted
blobs, text-like marks and strokes); surfaces read it through their own offset,
texel density and tint, so no two surfaces look alike and nothing is periodic
within a surface (a surface only repeats after ``ATLAS_SIZE / texels_per_metre``
metres). A mip pyramid built by 2x2 averaging lets the renderer pick the level
that matches each pixel's footprint, which keeps far and grazing surfaces free
of aliasing (feature matching and dense stereo run on these images).
"""

from __future__ import annotations

import functools
import string

import cv2
import numpy as np

ATLAS_SIZE = 2048  # texels per side; a power of two so every mip level halves exactly
_GLYPHS = string.ascii_letters + string.digits + "#%&@+=<>?"
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_PLAIN,
)


def _spectral_noise(rng: np.random.Generator, size: int, channels: int, beta: float) -> np.ndarray:
    """Tileable noise with amplitude ~ 1/f^beta: detail at every scale. float32 [size, size, C], unit std."""
    import scipy.fft  # slow to import; only building an atlas needs it

    white = rng.standard_normal((channels, size, size), dtype=np.float32)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx * fx + fy * fy) * size  # cycles per atlas
    gain = (1.0 / np.maximum(f, 1.0) ** beta).astype(np.float32)
    gain[0, 0] = 0.0  # no DC: the noise modulates around the painted colour
    noise = scipy.fft.irfft2(scipy.fft.rfft2(white) * gain, s=(size, size)).astype(np.float32)
    noise /= noise.std(axis=(1, 2), keepdims=True) + 1e-12
    return np.moveaxis(noise, 0, -1)


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Muted colours (moderate saturation, any brightness), like paint and materials."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(20, 130), rng.uniform(50, 245)]]], np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(c) for c in rgb)


def _paint_blobs(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """Opaque ellipses and rectangles, large first so small ones stay visible on top."""
    size = canvas.shape[0]
    radii = np.sort(np.exp(rng.uniform(np.log(3.0), np.log(size / 10), count)))[::-1]
    for r in radii:
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        colour = _random_colour(rng)
        if rng.random() < 0.7:
            axes = (int(r), max(1, int(r * rng.uniform(0.3, 1.0))))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            half = np.array([r, r * rng.uniform(0.2, 1.0)])
            angle = rng.uniform(0, np.pi)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ rot.T + centre
            cv2.fillPoly(canvas, [np.round(corners).astype(np.int32)], colour, cv2.LINE_AA)


def _draw_marks(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """Text-like glyph strings and pen strokes: sharp corners for keypoint detectors."""
    size = canvas.shape[0]
    for _ in range(count):
        colour = tuple(int(c) for c in np.clip(
            (rng.uniform(10, 60) if rng.random() < 0.6 else rng.uniform(190, 250)) + rng.normal(0, 12, 3), 0, 255))
        origin = tuple(int(c) for c in rng.integers(0, size, 2))
        if rng.random() < 0.7:
            text = "".join(rng.choice(list(_GLYPHS), int(rng.integers(1, 8))))
            scale = float(np.exp(rng.uniform(np.log(0.3), np.log(2.0))))
            thickness = int(rng.integers(1, 2 + int(scale)))
            font = _FONTS[int(rng.integers(len(_FONTS)))]
            cv2.putText(canvas, text, origin, font, scale, colour, thickness, cv2.LINE_AA)
        else:
            steps = rng.normal(0, rng.uniform(5, 60), (int(rng.integers(2, 6)), 2))
            pts = np.round(np.cumsum(steps, axis=0) + origin).astype(np.int32)
            cv2.polylines(canvas, [pts], False, colour, int(rng.integers(1, 4)), cv2.LINE_AA)


@functools.lru_cache(maxsize=4)
def texture_pyramid(seed: int, size: int = ATLAS_SIZE) -> tuple[np.ndarray, ...]:
    """The atlas of ``seed`` and its mip levels: uint8 [size / 2^l, size / 2^l, 3], RGB, finest first.

    Cached: building it takes about a second and it is read-only afterwards.
    """
    if size < 64 or size & (size - 1):
        raise ValueError(f"texture atlas size must be a power of two >= 64, got {size}")
    rng = np.random.default_rng([seed, 0x7E57])
    # Luminance noise carries most of the fine structure; chroma noise varies colour slowly.
    lum = _spectral_noise(rng, size, 1, beta=1.0)
    # Chroma is smooth: synthesise it small and upsample (with wrap padding, so it still tiles).
    small = size // 8
    chroma = np.pad(_spectral_noise(rng, small, 3, beta=1.6), ((2, 2), (2, 2), (0, 0)), mode="wrap")
    chroma = cv2.resize(chroma, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)[16:-16, 16:-16]
    painted = np.full((size, size, 3), 128, np.uint8)
    _paint_blobs(rng, painted, count=size * size // 3000)
    atlas = painted.astype(np.float32) / 255.0
    grey = atlas.mean(axis=2, keepdims=True)
    atlas = grey + 0.55 * (atlas - grey)  # muted: each surface's tint gives it its own colour
    atlas = atlas * (1.0 + 0.35 * np.clip(lum, -2.5, 2.5)) + 0.05 * chroma
    atlas = np.clip(atlas * 255.0, 0, 255).astype(np.uint8)
    _draw_marks(rng, atlas, count=size * size // 12000)
    # A slight blur removes the last texel-scale jaggies of the drawing primitives.
    padded = np.pad(atlas, ((4, 4), (4, 4), (0, 0)), mode="wrap")
    atlas = cv2.GaussianBlur(padded, (0, 0), 0.7)[4:-4, 4:-4]
    levels = [np.ascontiguousarray(atlas)]
    while levels[-1].shape[0] > 4:
        prev = levels[-1].astype(np.float32)
        half = prev.reshape(prev.shape[0] // 2, 2, prev.shape[1] // 2, 2, 3).mean(axis=(1, 3))
        levels.append(np.round(half).astype(np.uint8))
    return tuple(levels)


def _remap_flat(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of ``image`` at float coordinates ``x, y [M]`` -> float32 [M, 3]."""
    m = x.shape[0]
    cols = 1024  # cv2.remap needs both map sides below SHRT_MAX
    rows = -(-m // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:m] = x
    my[:m] = y
    out = cv2.remap(image, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_WRAP)
    return out.reshape(-1, 3)[:m].astype(np.float32)


def sample_pyramid(pyramid: tuple[np.ndarray, ...], x: np.ndarray, y: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """Trilinear lookup: texel coordinates ``x, y [M]`` of level 0, level of detail ``lod [M]``.

    Returns RGB float32 [M, 3] in [0, 1]. Coordinates wrap around the atlas.
    """
    size = pyramid[0].shape[0]
    top = len(pyramid) - 1
    x = np.mod(np.asarray(x, np.float64), size)
    y = np.mod(np.asarray(y, np.float64), size)
    lod = np.clip(np.asarray(lod, np.float64), 0.0, top)
    lower = np.minimum(lod.astype(np.int64), top)
    frac = (lod - lower).astype(np.float32)[:, None]
    out = np.empty((x.shape[0], 3), np.float32)
    # Group samples by their lower level: each group blends that level and the next one.
    order = np.argsort(lower.astype(np.int8), kind="stable")  # int8 + stable: a linear-time radix sort
    bounds = np.searchsorted(lower[order], np.arange(top + 2))
    for level in range(top + 1):
        sel = order[bounds[level]:bounds[level + 1]]
        if sel.size == 0:
            continue
        colour = _sample_level(pyramid, level, x[sel], y[sel])
        if level < top:
            w = frac[sel]
            colour = colour * (1.0 - w) + _sample_level(pyramid, level + 1, x[sel], y[sel]) * w
        out[sel] = colour
    return out / 255.0


def _sample_level(pyramid: tuple[np.ndarray, ...], level: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup in ``pyramid[level]`` at level-0 texel coordinates -> float32 [M, 3] in 0..255."""
    scale = 0.5 ** level  # texel centres of level l sit at (x0 + 0.5) / 2^l - 0.5
    return _remap_flat(pyramid[level], (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5)
