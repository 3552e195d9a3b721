"""The VGGT network: state-dict layout, shapes, save/load, determinism, head flags.

Small configurations run the same code as VGGT-1B (random weights); the
full-size layout is checked on the meta device against a manifest generated
from the official implementation (tests/recon/data/vggt_state_dict_manifest.json).
"""

import json
from pathlib import Path

import pytest
import torch

from recon.vggt import VGGT, VGGTConfig

MANIFEST = Path(__file__).parent / "data" / "vggt_state_dict_manifest.json"
HEADS = ("camera_head", "point_head", "depth_head", "track_head")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_model(seed: int = 0, **overrides) -> VGGT:
    torch.manual_seed(seed)
    return VGGT(config=VGGTConfig.small(**overrides)).eval()


def frames(S: int = 3, H: int = 42, W: int = 56, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(seed))


def test_full_size_state_dict_matches_official_manifest_key_for_key():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        model = VGGT()
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(manifest)  # same keys, same order
    wrong = {k: (got[k], manifest[k]) for k in manifest if got[k] != manifest[k]}
    assert not wrong
    assert sum(v.numel() for v in model.state_dict().values()) == 1_256_537_516


def test_full_size_without_track_head_has_every_other_key_of_the_manifest():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        model = VGGT(enable_track=False)
    expected = [k for k in manifest if not k.startswith("track_head.")]
    assert list(model.state_dict()) == expected


def test_output_dict_has_vggt_keys_and_shapes():
    model = small_model()
    query = torch.tensor([[10.0, 12.0], [40.0, 30.0]])
    with torch.no_grad():
        out = model(frames()[0], query_points=query)  # [S, 3, H, W] input gets a batch dimension
    assert out["pose_enc"].shape == (1, 3, 9)
    assert len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (1, 3, 42, 56, 1)
    assert out["depth_conf"].shape == (1, 3, 42, 56)
    assert out["world_points"].shape == (1, 3, 42, 56, 3)
    assert out["world_points_conf"].shape == (1, 3, 42, 56)
    assert out["track"].shape == (1, 3, 2, 2) and out["vis"].shape == out["conf"].shape == (1, 3, 2)
    assert out["images"].shape == (1, 3, 3, 42, 56)
    assert (out["depth"] > 0).all() and (out["depth_conf"] > 1).all() and (out["world_points_conf"] > 1).all()
    assert (out["pose_enc"][..., 7:] >= 0).all()  # fields of view pass a ReLU
    assert torch.equal(out["track"][:, 0], query[None])  # the query frame keeps its points


def test_forward_is_deterministic_and_batch_items_are_independent():
    model = small_model()
    x = frames()
    with torch.no_grad():
        a, b = model(x), model(x)
        batched = model(torch.cat([x, frames(seed=7)]))
    for key in ("pose_enc", "depth", "world_points"):
        assert torch.equal(a[key], b[key])
        torch.testing.assert_close(batched[key][:1], a[key], atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_reproduces_outputs(tmp_path):
    model = small_model(seed=0)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = small_model(seed=123)
    other.load_state_dict(torch.load(tmp_path / "m.pt"), strict=True)
    x = frames()
    with torch.no_grad():
        a, b = model(x), other(x)
    for key in ("pose_enc", "depth", "depth_conf", "world_points"):
        assert torch.equal(a[key], b[key])


HEAD_OUTPUT = {"camera_head": "pose_enc", "point_head": "world_points", "depth_head": "depth", "track_head": "track"}


@pytest.mark.parametrize("head", HEADS)
def test_disabled_head_has_no_parameters_and_its_checkpoint_keys_are_skipped_explicitly(head):
    full = small_model()
    partial = VGGT(config=VGGTConfig.small(**{f"enable_{head.split('_')[0]}": False})).eval()
    assert getattr(partial, head) is None
    assert not any(k.startswith(head + ".") for k in partial.state_dict())
    partial.load_state_dict(full.state_dict(), strict=True)
    assert partial.skipped_keys and all(k.startswith(head + ".") for k in partial.skipped_keys)
    with torch.no_grad():
        out = partial(frames(S=2), query_points=torch.tensor([[5.0, 5.0]]))
    assert HEAD_OUTPUT[head] not in out
    assert all(key in out for other, key in HEAD_OUTPUT.items() if other != head)


def test_unexpected_key_still_fails_strict_loading():
    model = small_model()
    state = model.state_dict()
    state["aggregator.not_a_parameter"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="not_a_parameter"):
        model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("H, W", [(56, 56), (42, 56), (70, 42)])
def test_any_patch_multiple_image_size_runs_with_interpolated_position_embedding(H, W):
    model = small_model(enable_track=False)
    with torch.no_grad():
        out = model(frames(S=2, H=H, W=W))
    assert out["depth"].shape == (1, 2, H, W, 1)
    assert torch.isfinite(out["world_points"]).all()


def test_dense_heads_give_the_same_maps_when_processing_frames_in_chunks():
    model = small_model(enable_track=False)
    x = frames(S=5)
    with torch.no_grad():
        layers, start = model.aggregator(x)
        whole = model.depth_head(layers, (42, 56), start, frames_chunk_size=None)
        chunked = model.depth_head(layers, (42, 56), start, frames_chunk_size=2)
    torch.testing.assert_close(chunked[0], whole[0], atol=1e-6, rtol=1e-6)


def test_aggregator_outputs_concatenate_frame_and_global_tokens():
    model = small_model()
    with torch.no_grad():
        layers, start = model.aggregator(frames(S=2), retained=(0, 3))
    assert start == 5  # camera + 4 registers
    assert layers[1] is None and layers[2] is None
    assert layers[3].shape == (1, 2, 5 + 3 * 4, 2 * 64)


def test_first_frame_gets_its_own_camera_token():
    model = small_model()
    x = frames(S=1).repeat(1, 2, 1, 1, 1)  # the same image twice
    with torch.no_grad():
        out = model(x)
    assert not torch.allclose(out["pose_enc"][0, 0], out["pose_enc"][0, 1])


def test_bad_inputs_raise_errors_that_name_the_problem():
    model = small_model()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.rand(1, 2, 3, 40, 56))
    with pytest.raises(ValueError, match=r"\[S, 3, H, W\]"):
        model(torch.rand(2, 4, 42, 56))
    with pytest.raises(ValueError, match="dpt_layers"):
        VGGTConfig.small(dpt_layers=(0, 1, 2, 9))
    with pytest.raises(ValueError, match="patch_embed"):
        VGGTConfig(patch_embed="resnet")
