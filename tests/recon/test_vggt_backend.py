"""The VGGT WindowModel on real frames (small random-weight network): conventions and streaming windows."""

import json

import cv2
import numpy as np
import pytest
import torch

from recon.vggt import VGGT, VGGTConfig
from recon.vggt.backend import VGGTBackend, VGGTBackendConfig, build_vggt_backend
from recon.vggt.utils.pose_encoding import encoding_to_extrinsics_intrinsics
from recon.vggt.utils.preprocess import crop_preprocess, to_model_input
from stream4d.contracts import Frame, WindowModel
from stream4d.geometry import invert_se3, unproject_depth
from stream4d.testdata import SHARED_DATA

FERN = SHARED_DATA / "llff_fern"
WIDTH = 56  # small network, small images: 504x378 fern frames become 56x42


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fern_frames() -> list[Frame]:
    cams = json.loads((FERN / "cameras_images_8.json").read_text())["frames"][:8]
    frames = []
    for i, cam in enumerate(cams):
        image = cv2.cvtColor(cv2.imread(str(FERN / cam["image"])), cv2.COLOR_BGR2RGB)
        # As if ingest had halved a 1008x756 original (pixel centres at integers): that map
        # must be composed with VGGT's crop.
        scale = np.array([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]])
        frames.append(Frame(index=i, timestamp=i / 10, image=image, source=cam["image"],
                            input_size=(1008, 756), pixel_map=scale))
    return frames


def backend(small_vggt, **options) -> VGGTBackend:
    return VGGTBackend(small_vggt, "cpu", VGGTBackendConfig(image_width=WIDTH, **options))


def test_backend_satisfies_the_window_model_protocol(small_vggt):
    assert isinstance(backend(small_vggt), WindowModel)
    assert backend(small_vggt).name == "vggt"


def test_window_prediction_follows_stream4d_conventions(small_vggt, fern_frames):
    pred = backend(small_vggt, streaming=False).predict(fern_frames[:3])
    assert pred.model_size == (56, 42) and pred.num_frames == 3
    assert pred.images.dtype == np.uint8 and pred.depth.dtype == np.float32
    np.testing.assert_array_equal(pred.frame_indices, [0, 1, 2])
    np.testing.assert_array_equal(pred.input_sizes, [[1008, 756]] * 3)
    R = pred.c2w[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    assert np.isfinite(pred.K).all() and (pred.K[:, [0, 1], [0, 1]] > 0).all()
    np.testing.assert_allclose(pred.K[:, 0, 2], 27.5)  # (W - 1) / 2: pixel centres at integers
    np.testing.assert_allclose(pred.K[:, 1, 2], 20.5)
    assert (pred.depth > 0).all() and (pred.depth_conf > 0).all() and (pred.points_conf > 0).all()


def test_poses_intrinsics_and_maps_equal_the_networks_own_outputs(small_vggt, fern_frames):
    frames = fern_frames[:3]
    pred = backend(small_vggt, streaming=False).predict(frames)
    images = np.stack([crop_preprocess(f.image, WIDTH)[0] for f in frames])
    with torch.no_grad():
        out = small_vggt(to_model_input(images))
    enc = out["pose_enc"][0].double()
    extrinsics, K = encoding_to_extrinsics_intrinsics(enc, (42, 56))
    w2c = invert_se3(pred.c2w)
    np.testing.assert_allclose(w2c[:, :3, :], extrinsics.numpy(), atol=1e-5)
    valid = ((enc[:, 7:] > 1e-3) & (enc[:, 7:] < np.pi - 1e-3)).numpy()  # the rest are clamped (random weights)
    focal = pred.K[:, [1, 0], [1, 0]]  # (fy, fx): the order of (fov_h, fov_w)
    np.testing.assert_allclose(focal[valid], K[:, [1, 0], [1, 0]].numpy()[valid], rtol=1e-6)
    assert pred.info["fov_clamped_frames"] == int((~valid).any(axis=1).sum())
    np.testing.assert_array_equal(pred.depth, out["depth"][0, ..., 0].numpy())
    np.testing.assert_array_equal(pred.points, out["world_points"][0].numpy())
    np.testing.assert_array_equal(pred.images, images)


def test_pixel_maps_compose_ingest_and_vggt_crop(small_vggt, fern_frames):
    pred = backend(small_vggt, streaming=False).predict(fern_frames[:2])
    # The original 1008x756 image's pixel edges land on the model image's edges.
    corners = pred.pixel_maps[0] @ np.array([[-0.5, 1007.5], [-0.5, 755.5], [1.0, 1.0]])
    np.testing.assert_allclose(corners[:2].T, [[-0.5, -0.5], [55.5, 41.5]], atol=1e-9)
    K_input = pred.K_input(0)
    np.testing.assert_allclose(K_input[:2, 2], [503.5, 377.5], atol=1e-9)  # image centre of the original


def test_depth_points_option_unprojects_depth_with_the_predicted_camera(small_vggt, fern_frames):
    pred = backend(small_vggt, streaming=False, points_source="depth").predict(fern_frames[:2])
    expected = unproject_depth(pred.depth[1].astype(np.float64), pred.K[1], pred.c2w[1])
    np.testing.assert_allclose(pred.points[1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.points_conf, pred.depth_conf)


def test_streaming_windows_share_the_stream_frame_and_reuse_overlap_frames(small_vggt, fern_frames):
    streamer = backend(small_vggt)
    first = streamer.predict(fern_frames[0:4])
    second = streamer.predict(fern_frames[2:6])  # frames 2, 3 overlap
    assert second.info["new_frames"] == 2 and streamer.state.frames_seen == 6
    np.testing.assert_array_equal(second.c2w[:2], first.c2w[2:])
    np.testing.assert_array_equal(second.depth[:2], first.depth[2:])
    # One causal pass over frames 0..5 is what the two windows together computed.
    images = np.stack([crop_preprocess(f.image, WIDTH)[0] for f in fern_frames[:6]])
    with torch.no_grad():
        causal = small_vggt(to_model_input(images), causal=True)
    np.testing.assert_allclose(second.depth[2:], causal["depth"][0, 4:, ..., 0].numpy(), rtol=1e-4, atol=1e-4)


def test_reset_starts_a_new_stream_with_the_same_results(small_vggt, fern_frames):
    streamer = backend(small_vggt)
    a = streamer.predict(fern_frames[0:3])
    streamer.predict(fern_frames[3:5])
    streamer.reset()
    b = streamer.predict(fern_frames[0:3])
    np.testing.assert_allclose(b.c2w, a.c2w, atol=1e-6)


def test_streaming_rejects_frames_it_no_longer_holds(small_vggt, fern_frames):
    streamer = backend(small_vggt)
    streamer.predict(fern_frames[0:3])
    streamer.predict(fern_frames[3:6])
    with pytest.raises(ValueError, match=r"frames \[1\] were streamed before"):
        streamer.predict([fern_frames[1], fern_frames[6]])
    with pytest.raises(ValueError, match="increasing Frame.index"):
        streamer.predict([fern_frames[7], fern_frames[6].__class__(**{**fern_frames[6].__dict__, "index": 7})])


def test_mixed_aspect_ratios_in_one_window_are_rejected_by_name(small_vggt, fern_frames):
    wide = Frame(index=1, timestamp=0.1, image=np.zeros((100, 400, 3), np.uint8), source="wide.png")
    with pytest.raises(ValueError, match="wide.png: 400x100"):
        backend(small_vggt, streaming=False).predict([fern_frames[0], wide])
    with pytest.raises(ValueError, match="at least one frame"):
        backend(small_vggt).predict([])


def test_backend_needs_the_heads_it_reports(small_vggt):
    no_depth = VGGT(config=VGGTConfig.small(enable_track=False, enable_depth=False))
    with pytest.raises(ValueError, match="depth and camera heads"):
        VGGTBackend(no_depth, "cpu")
    with pytest.raises(ValueError, match="points_source"):
        VGGTBackendConfig(points_source="lidar")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        VGGTBackend(small_vggt, "cpu", VGGTBackendConfig(image_width=50))


def test_build_from_checkpoint_gives_the_same_predictions(small_vggt, fern_frames, tmp_path):
    torch.save(small_vggt.state_dict(), tmp_path / "small_vggt.pt")
    built = build_vggt_backend(tmp_path / "small_vggt.pt", "cpu", streaming=False,
                               model_config=VGGTConfig.small(enable_track=False), image_width=WIDTH)
    a = built.predict(fern_frames[:2])
    b = backend(small_vggt, streaming=False).predict(fern_frames[:2])
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.c2w, b.c2w)
