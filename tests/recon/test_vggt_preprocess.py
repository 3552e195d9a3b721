"""VGGT's crop preprocessing on the real data sets: sizes, and the pixel map back to the input."""

import json

import cv2
import numpy as np
import pytest

from recon.vggt.utils.preprocess import crop_preprocess, crop_size, to_model_input
from stream4d.testdata import SHARED_DATA

DATA = SHARED_DATA


def first_image(set_name: str, cameras: str = "cameras.json") -> np.ndarray:
    frame = json.loads((DATA / set_name / cameras).read_text())["frames"][0]
    image = cv2.imread(str(DATA / set_name / frame["image"]), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("set_name, cameras, expected_hw", [
    ("llff_fern", "cameras_images_8.json", (392, 518)),  # 504x378: 4:3
    ("kitti_seq1", "cameras.json", (154, 518)),  # 1226x370: very wide
    ("dtu_scan24", "cameras.json", (392, 518)),  # 1600x1200
])
def test_real_images_are_resized_to_width_518_and_a_patch_multiple_height(set_name, cameras, expected_hw):
    image = first_image(set_name, cameras)
    out, affine = crop_preprocess(image)
    assert out.shape == (*expected_hw, 3) and out.dtype == np.uint8
    assert out.shape[0] % 14 == 0
    H, W = image.shape[:2]
    # The image corners' pixel edges map onto the output's edges (no crop for landscape input).
    corners = affine @ np.array([[-0.5, W - 0.5], [-0.5, H - 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(corners[:2].T, [[-0.5, -0.5], [517.5, expected_hw[0] - 0.5]], atol=1e-9)


def test_portrait_images_are_centre_cropped_to_a_square():
    assert crop_size(378, 504) == (686, 518, 84)
    image = np.zeros((504, 378, 3), np.uint8)
    out, affine = crop_preprocess(image)
    assert out.shape == (518, 518, 3)
    assert affine[1, 2] == pytest.approx(0.5 * 686 / 504 - 0.5 - 84)


def test_pixel_map_takes_an_input_feature_to_its_place_in_the_model_image():
    image = first_image("llff_fern", "cameras_images_8.json").copy()
    for x, y in [(100, 80), (403, 300), (250, 30)]:
        image = cv2.circle(image, (x, y), 6, (255, 0, 255), -1)  # magenta disc: absent from a fern
    out, affine = crop_preprocess(image)
    magenta = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] > 200)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(magenta.astype(np.uint8))
    found = sorted(map(tuple, centroids[1:]))
    expected = sorted(map(tuple, (affine @ np.array([[100, 403, 250], [80, 300, 30], [1, 1, 1]]))[:2].T))
    np.testing.assert_allclose(found, expected, atol=0.3)


def test_model_input_is_float_in_unit_range_channels_first():
    images = np.stack([np.full((14, 28, 3), 255, np.uint8), np.zeros((14, 28, 3), np.uint8)])
    x = to_model_input(images)
    assert x.shape == (2, 3, 14, 28) and x.dtype.is_floating_point
    assert x[0].min() == 1.0 and x[1].max() == 0.0


def test_bad_images_raise_errors_naming_the_problem():
    with pytest.raises(ValueError, match="uint8"):
        crop_preprocess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="too wide"):
        crop_preprocess(np.zeros((4, 1000, 3), np.uint8))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        crop_preprocess(np.zeros((40, 40, 3), np.uint8), target_width=50)
