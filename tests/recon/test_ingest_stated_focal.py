"""The focal length an input's metadata states (photos' EXIF, iPhone videos' QuickTime tag): read,
scaled with the resize, passed on as a hint."""

from __future__ import annotations

import math
import struct

import av
import cv2
import numpy as np
import pytest
from _ingest_media import DATA, textured_frame
from PIL import Image

from recon.ingest import IngestOptions, open_source
from recon.ingest.stated_focal import (
    FOCAL_LENGTH,
    FOCAL_LENGTH_35MM,
    FOCAL_PLANE_RESOLUTION_UNIT,
    FOCAL_PLANE_X_RESOLUTION,
    PIXEL_X_DIMENSION,
    QUICKTIME_FOCAL_35MM,
    exif_focal,
    focal_from_tags,
    quicktime_focal,
)

DIAGONAL_35MM = math.hypot(36.0, 24.0)


def _exif(tags: dict) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(0x8769).update(tags)
    return exif


def _save(path, image: np.ndarray, tags: dict | None) -> None:
    """A JPEG or PNG of ``image`` (RGB) carrying ``tags`` in its EXIF sub-IFD."""
    extra = {} if tags is None else {"exif": _exif(tags).tobytes()}
    Image.fromarray(image).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}), **extra)


def test_the_35mm_equivalent_is_read_across_the_diagonal_and_wins():
    stated = focal_from_tags({FOCAL_LENGTH_35MM: 26, FOCAL_LENGTH: 4.2, FOCAL_PLANE_X_RESOLUTION: 500.0,
                              FOCAL_PLANE_RESOLUTION_UNIT: 4}, (4032, 3024))
    assert stated.tag == "FocalLengthIn35mmFilm"
    assert stated.focal_px == pytest.approx(26 / DIAGONAL_35MM * 5040.0)


def test_the_focal_plane_resolution_gives_pixels_scaled_to_the_stored_width():
    tags = {FOCAL_LENGTH: 50.0, FOCAL_PLANE_X_RESOLUTION: 3000 / 1.4173, FOCAL_PLANE_RESOLUTION_UNIT: 2}  # px/inch
    assert focal_from_tags(tags, (1536, 1024)).focal_px == pytest.approx(50.0 * 3000 / 1.4173 / 25.4)
    # resized to half after capture: PixelXDimension still says what the sensor wrote
    half = focal_from_tags({**tags, PIXEL_X_DIMENSION: 3072}, (1536, 1024))
    assert half.focal_px == pytest.approx(0.5 * 50.0 * 3000 / 1.4173 / 25.4)
    assert half.tag == "FocalLength+FocalPlaneXResolution"


@pytest.mark.parametrize("tags", [{}, {FOCAL_LENGTH: 4.2}, {FOCAL_LENGTH_35MM: 0}, {FOCAL_LENGTH_35MM: 1},
                                  {FOCAL_LENGTH_35MM: 5000}, {FOCAL_LENGTH: 4.2, FOCAL_PLANE_X_RESOLUTION: 0.0}])
def test_missing_zero_or_implausible_values_state_nothing(tags):
    assert focal_from_tags(tags, (640, 480)) is None


def test_files_without_exif_or_that_are_not_images_state_nothing(tmp_path):
    _save(tmp_path / "plain.jpg", textured_frame(0, 64, 48), None)
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    assert exif_focal(tmp_path / "plain.jpg") is None
    assert exif_focal(tmp_path / "junk.jpg") is None
    assert exif_focal(tmp_path / "missing.jpg") is None


def test_a_folder_of_photos_passes_the_stated_focal_on_scaled_with_the_resize(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    for n, suffix in [(1, ".jpg"), (2, ".png")]:
        _save(folder / f"img{n}{suffix}", textured_frame(n, 160, 120), {FOCAL_LENGTH_35MM: 28})
    _save(folder / "img3.jpg", textured_frame(3, 160, 120), None)  # one photo without EXIF
    stated = 28 / DIAGONAL_35MM * 200.0  # the diagonal of 160x120
    with open_source(folder, IngestOptions(resize=80)) as src:
        frames = list(src)
    assert [f.K for f in frames] == [None, None, None]  # a statement, not known intrinsics
    assert [f.focal_hint for f in frames[:2]] == pytest.approx([stated / 2, stated / 2])
    assert frames[2].focal_hint is None
    with open_source(folder, IngestOptions(metadata_focal=False)) as src:
        assert all(f.focal_hint is None for f in src)
    with open_source(folder, IngestOptions(fov_deg=60.0)) as src:  # what the user says wins
        assert all(f.focal_hint is None and f.K is not None for f in src)


def test_a_listed_k_wins_and_the_exif_is_not_read(tmp_path):
    data = DATA / "strecha_fountain_p11"
    with open_source(data, IngestOptions(max_frames=1)) as src:
        frame = next(iter(src))
    assert frame.K is not None and frame.focal_hint is None


def test_an_app1_segment_in_an_existing_jpeg_is_found(tmp_path):
    """Cameras write EXIF as the first segment after the JPEG's start marker."""
    ok, data = cv2.imencode(".jpg", textured_frame(5, 96, 64))
    payload = _exif({FOCAL_LENGTH_35MM: 35}).tobytes()
    payload = payload if payload.startswith(b"Exif") else b"Exif\x00\x00" + payload
    raw = data.tobytes()
    (tmp_path / "cam.jpg").write_bytes(raw[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + raw[2:])
    assert exif_focal(tmp_path / "cam.jpg").focal_px == pytest.approx(35 / DIAGONAL_35MM * math.hypot(96, 64))


def _movie(path, tags: dict, size=(96, 64), frames=6) -> None:
    """An H.264 movie of ``frames`` textured frames whose container carries ``tags`` as QuickTime
    'mdta' keys, as an iPhone writes them."""
    with av.open(str(path), "w", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(tags)
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for n in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(textured_frame(n, *size), format="rgb24")))
        out.mux(stream.encode())


def test_an_iphone_video_states_its_35mm_equivalent_in_the_movie_tags(tmp_path):
    _movie(tmp_path / "phone.mov", {QUICKTIME_FOCAL_35MM: "26"})
    stated = 26 / DIAGONAL_35MM * math.hypot(96, 64)
    with open_source(tmp_path / "phone.mov", IngestOptions(resize=48)) as src:
        frames = list(src)
    assert len(frames) == 6 and all(f.K is None for f in frames)
    assert [f.focal_hint for f in frames] == pytest.approx([stated / 2] * 6)
    with open_source(tmp_path / "phone.mov", IngestOptions(metadata_focal=False)) as src:
        assert all(f.focal_hint is None for f in src)
    _movie(tmp_path / "plain.mp4", {})
    with open_source(tmp_path / "plain.mp4") as src:
        assert all(f.focal_hint is None for f in src)


@pytest.mark.parametrize("value", ["-13", "abc", "0", "9000"])
def test_a_video_tag_that_is_not_a_plausible_focal_states_nothing(value):
    assert quicktime_focal({QUICKTIME_FOCAL_35MM: value}, (1920, 1080)) is None
