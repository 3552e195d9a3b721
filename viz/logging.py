"""Map stream4d contracts onto rerun archetypes; one ``rec.log`` per archetype, nothing more.

Every function logs at the recording's current time (the caller sets it with
``set_frame_time``). Entity paths come from ``viz.paths``.
"""

from __future__ import annotations

import cv2
import numpy as np
import rerun as rr

from viz import paths

# float16 keeps depth exact to ~0.05 % and halves the recording; beyond its range use float32.
_FLOAT16_MAX = 6.0e4


def set_frame_time(rec: rr.RecordingStream, frame_index: int, timestamp: float) -> None:
    """Point both timelines at one frame: its stream index and its timestamp (seconds)."""
    rec.set_time(paths.FRAME_TIMELINE, sequence=int(frame_index))
    rec.set_time(paths.TIME_TIMELINE, duration=float(timestamp))


def log_world_axes(rec: rr.RecordingStream) -> None:
    """Declare the world's axes: OpenCV (right, down, forward), so the 3D view opens upright."""
    rec.log(paths.WORLD, rr.ViewCoordinates.RDF, static=True)


def log_camera(
    rec: rr.RecordingStream,
    c2w: np.ndarray,  # [4, 4] camera-to-world
    K: np.ndarray,  # [3, 3] pixels of the image the model saw
    size: tuple[int, int],  # (W, H) of that image
    plane_distance: float | None = None,  # frustum depth in world units
    entity: str = paths.CAMERA,  # or paths.KEYFRAME
    pinhole: str = paths.PINHOLE,  # or paths.KEYFRAME_PINHOLE
) -> None:
    rec.log(entity, rr.Transform3D(translation=c2w[:3, 3], mat3x3=c2w[:3, :3]))
    rec.log(pinhole, rr.Pinhole(
        image_from_camera=K, resolution=[int(size[0]), int(size[1])],
        camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=plane_distance,
    ))


def log_tracked_camera(rec: rr.RecordingStream, c2w: np.ndarray, K: np.ndarray, size: tuple[int, int],
                       plane_distance: float | None, color: tuple[int, int, int]) -> None:
    """A tracked frame: pose ``c2w`` [4, 4], intrinsics ``K`` [3, 3] of an image of ``size`` (W, H),
    drawn as a coloured frustum with no image."""
    rec.log(paths.TRACKED, rr.Transform3D(translation=c2w[:3, 3], mat3x3=c2w[:3, :3]))
    rec.log(paths.TRACKED_PINHOLE, rr.Pinhole(
        image_from_camera=K, resolution=[int(size[0]), int(size[1])], camera_xyz=rr.ViewCoordinates.RDF,
        image_plane_distance=plane_distance, color=color))


def log_tracked_path(rec: rr.RecordingStream, centres: np.ndarray) -> None:
    """Centres ``[N, 3]`` of the tracked frames so far, in frame order."""
    rec.log(paths.TRACKED_PATH, rr.LineStrips3D([centres], colors=[0, 200, 255]))


def log_image(rec: rr.RecordingStream, image: np.ndarray, jpeg_quality: int | None) -> None:
    """``image``: uint8 [H, W, 3] RGB; JPEG-compressed with OpenCV unless ``jpeg_quality`` is None."""
    if jpeg_quality is None:
        rec.log(paths.IMAGE, rr.Image(image, color_model="RGB"))
        return
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    rec.log(paths.IMAGE, rr.EncodedImage(contents=buf.tobytes(), media_type="image/jpeg"))


def log_depth(rec: rr.RecordingStream, depth: np.ndarray, conf: np.ndarray) -> None:
    """``depth``: z-depth [H, W] (0 = unknown); ``conf``: [H, W] >= 0, shown scaled to its 99th percentile."""
    finite = np.where(np.isfinite(depth), depth, 0.0)
    small = float(np.abs(finite).max(initial=0.0)) < _FLOAT16_MAX
    rec.log(paths.DEPTH, rr.DepthImage(finite.astype(np.float16 if small else np.float32), meter=1.0))
    c = np.where(np.isfinite(conf), conf, 0.0)
    top = float(np.percentile(c, 99)) if c.size else 0.0
    scaled = np.clip(c / top, 0.0, 1.0) if top > 0 else np.zeros_like(c)
    rec.log(paths.CONFIDENCE, rr.Image((scaled * 255).astype(np.uint8), color_model="L"))


def log_frame_points(rec: rr.RecordingStream, positions: np.ndarray, colors: np.ndarray) -> None:
    """The current frame's point map: ``positions [M, 3]`` world, ``colors [M, 3]`` uint8."""
    rec.log(paths.FRAME_POINTS, rr.Points3D(positions, colors=colors))


def clear_frame_pixels(rec: rr.RecordingStream) -> None:
    """A frame whose pixels were dropped: blank its image rather than leave the previous frame's
    under the new camera (keyframe depth and points sit under their own pose and stay true)."""
    rec.log(paths.IMAGE, rr.Clear(recursive=False))


def log_trajectory(rec: rr.RecordingStream, strips: list[np.ndarray]) -> None:
    """Camera path so far: one polyline ``[N_k, 3]`` per segment (worlds are not comparable)."""
    rec.log(paths.TRAJECTORY, rr.LineStrips3D(strips, colors=[255, 140, 0]))


def log_final_trajectory(rec: rr.RecordingStream, strips: list[np.ndarray]) -> None:
    """Every frame's final camera path once the stream has ended: one polyline ``[N_k, 3]`` per segment."""
    rec.log(paths.FINAL_TRAJECTORY, rr.LineStrips3D(strips, colors=[60, 200, 90]))


def _rgba(colors: np.ndarray, opacities: np.ndarray) -> np.ndarray:
    """float RGB [N, 3] in [0, 1] + opacity [N] -> uint8 RGBA [N, 4]."""
    rgba = np.concatenate([colors, opacities[:, None]], axis=1)
    return (np.clip(rgba, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def log_gaussians(
    rec: rr.RecordingStream,
    entity: str,
    means: np.ndarray,  # [N, 3] world
    colors: np.ndarray,  # [N, 3] RGB in [0, 1]
    opacities: np.ndarray,  # [N] in (0, 1)
    scales: np.ndarray,  # [N, 3] standard deviations
    quats: np.ndarray,  # [N, 4] w-first, local -> world
    style: str,
    point_radius: float = 2.0,  # points style: radius in mean standard deviations
) -> None:
    """Gaussians as ``points`` (radius = ``point_radius`` x mean std), 1-sigma ``ellipsoids`` or ``splats``."""
    rgba = _rgba(colors, opacities)
    xyzw = np.concatenate([quats[:, 1:], quats[:, :1]], axis=1)  # rerun quaternions are x, y, z, w
    if style == "points":
        archetype = rr.Points3D(means, radii=point_radius * scales.mean(axis=1), colors=rgba)
    elif style == "ellipsoids":
        archetype = rr.Ellipsoids3D(centers=means, half_sizes=scales, quaternions=xyzw,
                                    colors=rgba, fill_mode="solid")
    elif style == "splats":
        archetype = rr.GaussianSplats3D(means, scales=scales, quaternions=xyzw, colors=rgba)
    else:
        raise ValueError(f"unknown Gaussian style {style!r}; expected points, ellipsoids or splats")
    rec.log(entity, archetype)


def log_scalar(rec: rr.RecordingStream, entity: str, value: float) -> None:
    rec.log(entity, rr.Scalars(float(value)))
