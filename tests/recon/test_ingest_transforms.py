"""Resize / crop plans and their pixel maps, and option validation."""

from __future__ import annotations

import numpy as np
import pytest

from recon.ingest import IngestError, IngestOptions, parse_resize, plan_resize


def _blob_image(width, height, u, v, sigma=6.0):
    """uint8 [H, W, 3]: a Gaussian spot centred on pixel coordinates (u, v)."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    g = np.exp(-((x - u) ** 2 + (y - v) ** 2) / (2 * sigma ** 2))
    return np.repeat((g * 250).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image):
    w = image[..., 0].astype(np.float64)
    w = np.where(w > 2, w, 0)  # ignore quantisation dust far from the spot
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(w * x).sum() / w.sum(), (w * y).sum() / w.sum()])


@pytest.mark.parametrize("size,resize,point", [
    ((640, 360), "vggt", (411.3, 97.8)),  # downscale
    ((360, 640), "vggt", (170.4, 331.7)),  # portrait: scaled to 518 x 924, centre crop to 518
    ((320, 240), "vggt", (101.2, 150.6)),  # upscale
    ((1001, 667), 300, (612.5, 400.25)),  # max side, odd sizes rounded to even
])
def test_pixel_map_sends_an_input_point_to_where_the_resized_image_has_it(size, resize, point):
    W, H = size
    plan = plan_resize(size, resize)
    sigma = 6.0 * max(1.0, W / plan.scaled_size[0])  # keep the spot several output pixels wide
    out = plan.apply(_blob_image(W, H, *point, sigma=sigma))
    assert (out.shape[1], out.shape[0]) == plan.output_size
    mapped = (plan.pixel_map @ np.array([*point, 1.0]))[:2]
    np.testing.assert_allclose(_centroid(out), mapped, atol=0.03)  # no half-pixel term: 0.1-0.35 px off


def test_half_pixel_convention_of_the_pixel_map():
    plan = plan_resize((1000, 500), 500)  # exactly half size
    # Input pixel centres 0 and 1 average into output pixel 0, whose centre is input 0.5.
    np.testing.assert_allclose(plan.pixel_map @ [0.5, 0.5, 1], [0, 0, 1])
    np.testing.assert_allclose(plan.pixel_map @ [999.5, 499.5, 1], [499.5, 249.5, 1])


def test_vggt_plan_matches_vggt_crop_preprocessing():
    for (W, H), out, crop_y in [((640, 360), (518, 294), 0), ((1008, 756), (518, 392), 0),
                                ((1226, 370), (518, 154), 0), ((360, 640), (518, 518), 203)]:
        plan = plan_resize((W, H), "vggt")
        assert plan.output_size == out
        assert plan.crop_origin == (0, crop_y)
        assert plan.output_size[1] % 14 == 0


def test_max_side_resize_keeps_aspect_rounds_to_even_and_never_upscales():
    plan = plan_resize((1001, 667), 300)
    assert plan.output_size == (300, 200)
    assert all(s % 2 == 0 for s in plan.output_size)
    assert plan_resize((1226, 370), 512).output_size == (512, 154)
    small = plan_resize((200, 100), 300)
    assert small.is_identity
    np.testing.assert_array_equal(small.pixel_map, np.eye(3))


def test_no_resize_returns_the_same_pixels():
    image = np.zeros((30, 40, 3), np.uint8)
    plan = plan_resize((40, 30), None)
    assert plan.apply(image) is image and plan.is_identity


def test_vggt_refuses_panoramas_too_wide_to_have_a_patch_row():
    with pytest.raises(IngestError) as err:
        plan_resize((20000, 200), "vggt")
    assert err.value.reason == "bad_option"


@pytest.mark.parametrize("bad", [dict(stride=0), dict(stride=1.5), dict(target_fps=0), dict(max_frames=0),
                                 dict(resize="square"), dict(resize=8), dict(keyframe_min_motion=-0.1),
                                 dict(image_fps=-1), dict(live_capacity=0), dict(timeout=0)])
def test_bad_options_raise_ingest_error_naming_the_field(bad):
    with pytest.raises(IngestError) as err:
        IngestOptions(**bad)
    assert err.value.reason == "bad_option"
    assert next(iter(bad)) in str(err.value)


def test_parse_resize_accepts_cli_spellings():
    assert parse_resize(None) is None and parse_resize("none") is None and parse_resize("") is None
    assert parse_resize("VGGT") == "vggt"
    assert parse_resize("512") == 512
    with pytest.raises(IngestError):
        parse_resize("big")
