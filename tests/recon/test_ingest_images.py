"""Image folders and dataset folders (cameras.json) as frame sources."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from _ingest_media import DATA, textured_frame

from recon.ingest import IngestError, IngestOptions, open_source

DATASETS = [
    ("kitti_seq1", "cameras.json"),
    ("llff_fern", "cameras.json"),
    ("llff_fern", "cameras_images_8.json"),
    ("dtu_scan24", "cameras.json"),
    ("strecha_fountain_p11", "cameras.json"),
]


def _write_png(path, image):
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture
def folder(tmp_path):
    """img1, img2, img10 (natural order), plus files and folders that are not images."""
    root = tmp_path / "shots"
    root.mkdir()
    for n in [10, 2, 1]:
        _write_png(root / f"img{n}.png", textured_frame(n, 80, 60))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"junk from a file manager")
    (root / "sub").mkdir()
    _write_png(root / "sub" / "img0.png", textured_frame(0, 80, 60))
    return root


def test_image_folder_is_read_in_natural_order_ignoring_non_images(folder):
    with open_source(folder) as src:
        assert src.info.kind == "images"
        assert src.info.frame_count == 3 and src.info.size == (80, 60)
        frames = list(src)
    assert [f.source for f in frames] == ["img1.png", "img2.png", "img10.png"]
    np.testing.assert_array_equal(frames[2].image, textured_frame(10, 80, 60))  # PNG is lossless
    assert [f.timestamp for f in frames] == [0.0, 1.0, 2.0]  # no rate known: the position
    assert all(f.K is None for f in frames)


def test_image_timestamps_use_image_fps_and_the_position_before_stride(folder):
    with open_source(folder, IngestOptions(image_fps=4.0, stride=2)) as src:
        frames = list(src)
    assert [f.source for f in frames] == ["img1.png", "img10.png"]
    assert [f.index for f in frames] == [0, 1]
    assert [f.timestamp for f in frames] == [0.0, 0.5]
    assert src.info.fps == 4.0


def test_grey_images_become_rgb(tmp_path):
    grey = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(48, 64)
    assert cv2.imwrite(str(tmp_path / "g.png"), grey)
    with open_source(tmp_path) as src:
        (frame,) = list(src)
    assert frame.image.shape == (48, 64, 3)
    np.testing.assert_array_equal(frame.image[..., 1], grey)


def test_empty_folder_is_rejected_and_names_subfolders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(IngestError) as err:
        open_source(tmp_path)
    assert err.value.reason == "empty_folder"
    assert str(tmp_path) in str(err.value) and "images" in str(err.value)


def test_unreadable_image_raises_after_the_good_ones(folder):
    (folder / "img3.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    got = []
    with open_source(folder) as src:
        with pytest.raises(IngestError) as err:
            for frame in src:
                got.append(frame.source)
    assert got == ["img1.png", "img2.png"]
    assert err.value.reason == "unreadable_image" and "img3.jpg" in str(err.value)


def test_unreadable_first_image_fails_at_open(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(IngestError) as err:
        open_source(tmp_path)
    assert err.value.reason == "unreadable_image"


def test_single_image_file_is_a_one_frame_source(folder):
    with open_source(folder / "img2.png") as src:
        frames = list(src)
    assert len(frames) == 1 and frames[0].source == "img2.png"


@pytest.mark.parametrize("name,cameras", DATASETS)
def test_dataset_frames_come_in_listed_order_with_k_mapped_through_the_resize(name, cameras):
    listed = json.loads((DATA / name / cameras).read_text())["frames"]
    spec = DATA / name if cameras == "cameras.json" else DATA / name / cameras
    stride = 6
    with open_source(spec, IngestOptions(resize="vggt", stride=stride)) as src:
        assert src.info.kind == "dataset"
        assert src.info.frame_count == len(listed)
        assert src.info.size == (listed[0]["width"], listed[0]["height"])
        frames = list(src)
    expect = listed[::stride]
    assert [f.source for f in frames] == [item["image"] for item in expect]
    for frame, item in zip(frames, expect):
        W, H = item["width"], item["height"]
        assert frame.input_size == (W, H)
        assert frame.size[0] == 518 and frame.size[1] % 14 == 0 and frame.size[1] <= 518
        K = np.array(item["K"])
        np.testing.assert_allclose(frame.K, frame.pixel_map @ K)
        np.testing.assert_allclose(frame.K_in_input_pixels(frame.K), K, atol=1e-9)
        # The focal length scales with the image width; the centre moves with the pixel-centre shift.
        sx = 518 / W
        assert frame.K[0, 0] == pytest.approx(K[0, 0] * sx)
        assert frame.K[0, 2] == pytest.approx((K[0, 2] + 0.5) * sx - 0.5)


def test_dataset_without_resize_passes_k_through_unchanged():
    listed = json.loads((DATA / "llff_fern" / "cameras_images_8.json").read_text())["frames"]
    with open_source(DATA / "llff_fern" / "cameras_images_8.json", IngestOptions(max_frames=2)) as src:
        frames = list(src)
    for frame, item in zip(frames, listed):
        np.testing.assert_array_equal(frame.K, np.array(item["K"]))
        np.testing.assert_array_equal(frame.pixel_map, np.eye(3))
        assert frame.size == (item["width"], item["height"])


def _small_dataset(root, frames):
    (root / "images").mkdir(parents=True)
    for i in range(2):
        _write_png(root / "images" / f"{i:04d}.png", textured_frame(i, 40, 30))
    (root / "cameras.json").write_text(json.dumps({"frames": frames}))
    return root


def _item(i, w=40, h=30):
    return {"image": f"images/{i:04d}.png", "width": w, "height": h,
            "K": [[50, 0, 20], [0, 50, 15], [0, 0, 1]], "c2w": np.eye(4).tolist()}


def test_dataset_listing_a_missing_image_fails_at_open(tmp_path):
    root = _small_dataset(tmp_path / "set", [_item(0), _item(7)])
    with pytest.raises(IngestError) as err:
        open_source(root)
    assert err.value.reason == "missing" and "images/0007.png" in str(err.value)


def test_dataset_image_whose_size_disagrees_with_the_listing_is_rejected(tmp_path):
    root = _small_dataset(tmp_path / "set", [_item(0), _item(1, w=41)])
    with open_source(root) as src:
        it = iter(src)
        next(it)
        with pytest.raises(IngestError) as err:
            next(it)
    assert err.value.reason == "bad_dataset" and "0001.png" in str(err.value)


def test_malformed_cameras_json_is_rejected(tmp_path):
    root = _small_dataset(tmp_path / "set", [_item(0)])
    (root / "cameras.json").write_text('{"frames": [{"image": "images/0000.png", "K": [[1, 2]]}]}')
    with pytest.raises(IngestError) as err:
        open_source(root)
    assert err.value.reason == "bad_dataset" and "frames[0]" in str(err.value)
    (root / "cameras.json").write_text("{not json")
    with pytest.raises(IngestError) as err:
        open_source(root)
    assert err.value.reason == "bad_dataset"


def test_a_dataset_that_states_its_lens_is_read_undistorted_to_its_k(tmp_path):
    """A set ``stream4d synth --radial`` wrote (the lens in cameras.json): each image comes undistorted
    to the listed K, so it agrees with the same view rendered through a pinhole; a bad lens is refused."""
    from stream4d.cli import main as cli_main

    for name, k1 in (("lens", -0.06), ("pinhole", 0.0)):
        assert cli_main(["synth", "--frames", "1", "--size", "128x96", "--fov", "70", "--radial", str(k1),
                         "--out", str(tmp_path / name)]) == 0
    listed = json.loads((tmp_path / "lens" / "cameras.json").read_text())["frames"][0]
    with open_source(tmp_path / "lens", IngestOptions(resize=None)) as src:
        frame = next(iter(src))
    np.testing.assert_array_equal(frame.K, np.array(listed["K"]))
    pinhole = cv2.cvtColor(cv2.imread(str(tmp_path / "pinhole" / "images" / "000000.png")), cv2.COLOR_BGR2RGB)
    lens = cv2.cvtColor(cv2.imread(str(tmp_path / "lens" / "images" / "000000.png")), cv2.COLOR_BGR2RGB)
    seen = frame.image.sum(axis=-1) > 0  # the pixels the lens saw (barrel: all but the corners)
    assert seen.mean() > 0.9

    def off(image):
        return np.abs(image.astype(np.float64) - pinhole).mean(axis=-1)[seen].mean()

    assert off(frame.image) < 0.5 * off(lens)
    listed["radial_k1"] = "wide"
    (tmp_path / "lens" / "cameras.json").write_text(json.dumps({"frames": [listed]}))
    with pytest.raises(IngestError) as err:
        open_source(tmp_path / "lens")
    assert err.value.reason == "bad_dataset" and "radial_k1" in str(err.value)


def test_dataset_can_be_copied_elsewhere_and_keeps_relative_names(tmp_path):
    # Names are the listed relative paths, wherever the set lives.
    src_root = DATA / "llff_fern"
    root = tmp_path / "fern_copy"
    (root / "images_8").mkdir(parents=True)
    doc = json.loads((src_root / "cameras_images_8.json").read_text())
    doc["frames"] = doc["frames"][:2]
    for item in doc["frames"]:
        shutil.copy(src_root / item["image"], root / item["image"])
    (root / "cameras.json").write_text(json.dumps(doc))
    with open_source(root) as src:
        assert [f.source for f in src] == [item["image"] for item in doc["frames"]]


def test_a_camera_the_user_knows_gives_each_frame_its_k_and_a_listed_k_wins(folder, tmp_path):
    # 80x60 frames resized to 40x30: K follows the resize. The field of view is across the longest side.
    with open_source(folder, IngestOptions(fov_deg=90.0, resize=40)) as src:
        frames = list(src)
    np.testing.assert_allclose(frames[0].K, [[20.0, 0, 19.5], [0, 20.0, 14.5], [0, 0, 1]], atol=1e-9)
    with open_source(folder, IngestOptions(intrinsics=(70.0, 72.0, 39.0, 30.0))) as src:
        np.testing.assert_allclose(next(iter(src)).K, [[70.0, 0, 39.0], [0, 72.0, 30.0], [0, 0, 1]])
    _write_png(folder / "img11.png", textured_frame(11, 60, 80))  # a photo turned portrait
    with open_source(folder, IngestOptions(intrinsics=(70.0, 72.0, 39.0, 30.0))) as src, \
            pytest.raises(IngestError, match="60x80 frame, but the intrinsics given hold for 80x60"):
        list(src)
    with open_source(folder, IngestOptions(fov_deg=90.0)) as src:
        turned = list(src)[-1]
    np.testing.assert_allclose(turned.K[:2, :2], np.diag([40.0, 40.0]))  # any size: the longest side's
    data = DATA / "llff_fern"
    with open_source(data, IngestOptions(fov_deg=90.0, max_frames=1)) as src:
        listed = next(iter(src))
    assert listed.K[0, 0] == pytest.approx(815.13, abs=0.01)  # cameras.json's, not 90 degrees' 504 px


@pytest.mark.parametrize("bad", [{"intrinsics": (1.0, 2.0, 3.0)}, {"intrinsics": (0.0, 1.0, 2.0, 3.0)},
                                 {"intrinsics": (1.0, 1.0, float("nan"), 2.0)}, {"fov_deg": 0.5},
                                 {"fov_deg": 60.0, "intrinsics": (1.0, 1.0, 1.0, 1.0)}])
def test_bad_intrinsics_options_are_refused(bad):
    with pytest.raises(IngestError):
        IngestOptions(**bad)
