"""Loading VGGT checkpoints: .pt and .safetensors, the local Hugging Face cache, and clear errors.

Checkpoints are small-configuration state dicts written by the tests; a broken
one (missing file, truncated, key removed, shape changed, foreign key) must
raise CheckpointError naming what is wrong.
"""

import pytest
import torch
from safetensors.torch import save_file

from recon.vggt import VGGT, VGGTConfig
from recon.vggt.utils.checkpoint import CheckpointError, hf_cache_root, load_vggt, resolve_weights

CONFIG = VGGTConfig.small(enable_track=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def source() -> VGGT:
    torch.manual_seed(0)
    return VGGT(config=VGGTConfig.small()).eval()  # with the track head, as the official checkpoint


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, 2, 3, 42, 56, generator=torch.Generator().manual_seed(2))


def write(state: dict, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_checkpoint_loads_into_an_equal_network_and_skips_the_disabled_track_head(source, images, tmp_path, name):
    path = write(source.state_dict(), tmp_path / name)
    model = load_vggt(path, CONFIG)
    assert model.skipped_keys and all(k.startswith("track_head.") for k in model.skipped_keys)
    with torch.no_grad():
        a, b = source(images), model(images)
    assert torch.equal(a["pose_enc"], b["pose_enc"]) and torch.equal(a["depth"], b["depth"])
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_half_precision_checkpoint_is_loaded_as_fp32(source, tmp_path):
    path = write({k: v.half() for k, v in source.state_dict().items()}, tmp_path / "model.safetensors")
    model = load_vggt(path, CONFIG)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vggt(tmp_path / "nope.pt", CONFIG)


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_truncated_file_is_reported_as_unreadable(source, tmp_path, name):
    path = write(source.state_dict(), tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="could not be read"):
        load_vggt(path, CONFIG)


def test_removed_key_is_named(source, tmp_path):
    state = dict(source.state_dict())
    del state["aggregator.global_blocks.2.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing keys: aggregator\.global_blocks\.2\.attn\.qkv\.weight"):
        load_vggt(write(state, tmp_path / "model.pt"), CONFIG)


def test_changed_shape_names_key_and_both_shapes(source, tmp_path):
    state = dict(source.state_dict())
    state["depth_head.projects.0.weight"] = torch.zeros(9, 128, 1, 1)
    pattern = r"wrong shape: depth_head\.projects\.0\.weight: \[9, 128, 1, 1\] \(model wants \[8, 128, 1, 1\]\)"
    with pytest.raises(CheckpointError, match=pattern):
        load_vggt(write(state, tmp_path / "model.safetensors"), CONFIG)


def test_foreign_key_is_named_as_unexpected(source, tmp_path):
    state = dict(source.state_dict(), **{"aggregator.extra_token": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: aggregator\.extra_token"):
        load_vggt(write(state, tmp_path / "model.pt"), CONFIG)


def test_full_size_network_rejects_a_small_checkpoint_listing_shapes(source, tmp_path):
    path = write(source.state_dict(), tmp_path / "model.pt")
    pattern = r"aggregator\.camera_token: \[1, 2, 1, 64\] \(model wants \[1, 2, 1, 1024\]\)"
    with pytest.raises(CheckpointError, match=pattern):
        load_vggt(path)  # VGGT-1B: built on the meta device, so this costs no memory


def test_checkpoint_wrapped_in_a_model_entry_is_unwrapped(source, tmp_path):
    path = write({"model": source.state_dict(), "epoch": torch.tensor(3)}, tmp_path / "ckpt.pth")
    assert load_vggt(path, CONFIG).skipped_keys


def test_hf_spec_resolves_only_from_the_local_cache(source, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache_root() == tmp_path / "hub"
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache.*never downloads"):
        resolve_weights("hf:facebook/VGGT-1B")
    repo = tmp_path / "hub" / "models--facebook--VGGT-1B"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    write(source.state_dict(), snapshot / "model.safetensors")
    assert resolve_weights("hf:facebook/VGGT-1B") == snapshot / "model.safetensors"
    assert load_vggt("hf:facebook/VGGT-1B", CONFIG).skipped_keys


def test_directory_resolves_to_the_checkpoint_inside(source, tmp_path):
    with pytest.raises(CheckpointError, match="neither model.safetensors nor model.pt"):
        resolve_weights(tmp_path)
    write(source.state_dict(), tmp_path / "model.pt")
    assert resolve_weights(tmp_path) == tmp_path / "model.pt"


def test_unknown_suffix_is_rejected(tmp_path):
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="suffix"):
        resolve_weights(tmp_path / "weights.onnx")
