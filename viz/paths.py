"""Entity paths and timeline names of a stream4d recording (the tree mirrors the scene)."""

from __future__ import annotations

# Timelines: the stream position (Frame.index) and the frame's timestamp in seconds.
FRAME_TIMELINE = "frame"
TIME_TIMELINE = "time"

WORLD = "world"  # view coordinates: OpenCV (x right, y down, z forward)
CAMERA = "world/camera"  # Transform3D: camera-to-world of the current frame
PINHOLE = "world/camera/image"  # Pinhole: intrinsics + resolution
IMAGE = "world/camera/image/rgb"  # EncodedImage (JPEG) / Image of every posed frame
# Keyframes (every VizConfig.keyframe_every posed frames) carry the heavy pixels at reduced size, under
# their own camera so a depth map never sits under a later frame's pose.
KEYFRAME = "world/keyframe"  # Transform3D: camera-to-world of the newest keyframe
KEYFRAME_PINHOLE = "world/keyframe/image"  # Pinhole: intrinsics of the reduced depth
DEPTH = "world/keyframe/image/depth"  # DepthImage, z-depth, 0 where not confident
CONFIDENCE = "world/keyframe/image/confidence"  # Image, L8, depth confidence scaled to [0, 255]
FRAME_POINTS = "world/points"  # Points3D: the newest keyframe's point map (confident, decimated)
# Frames posed outside windows (live tracking as they arrive, frames between keyframes): a frustum
# without pixels; the live pose is replaced at the same frame time once the window around it is aligned.
TRACKED = "world/tracked"  # Transform3D: camera-to-world of the newest tracked frame
TRACKED_PINHOLE = "world/tracked/frustum"  # Pinhole, coloured by how the pose was made
TRACKED_PATH = "world/tracked/path"  # LineStrips3D: the tracked camera centres so far
TRAJECTORY = "world/trajectory"  # LineStrips3D: camera centres so far, one strip per segment
FINAL_TRAJECTORY = "world/final_trajectory"  # LineStrips3D: every frame's final centre, logged once at the end
GAUSSIANS = "world/gaussians"
STATIC_GAUSSIANS = "world/gaussians/static"  # the accumulated cache, refreshed every few windows
DYNAMIC_GAUSSIANS = "world/gaussians/dynamic"  # Gaussians of one timestamp, logged at that time

STATS = "stats"
FPS = "stats/fps"
CACHE_SIZE = "stats/gaussians"
ALIGN_SCALE = "stats/scale"
DROPPED = "stats/dropped"
DROPPED_LIVE_FRAMES = "stats/dropped/live_frames"  # StreamStats.frames_dropped
DROPPED_VIEWER_ITEMS = "stats/dropped/viewer_items"  # items the logging thread skipped
