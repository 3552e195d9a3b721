"""Streaming (StreamVGGT-style) inference equals one block-causal forward.

Frames streamed one (or a few) at a time through the KV caches must give the
same outputs as a single forward over all frames with a block-causal mask.
"""

import pytest
import torch

from recon.vggt import VGGT
from recon.vggt.layers.kv import UnboundedKVCache
from recon.vggt.models.streaming import StreamState

KEYS = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf")
S = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, S, 3, 42, 56, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def causal(small_vggt, images):
    with torch.no_grad():
        return small_vggt(images, causal=True)


def stream(small_vggt, images, chunks, state=None):
    state = state or StreamState()
    outs, start = [], 0
    with torch.no_grad():
        for n in chunks:
            outs.append(small_vggt(images[:, start:start + n], stream=state))
            start += n
    return {k: torch.cat([o[k] for o in outs], dim=1) for k in KEYS}, state


@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1), (2, 3), (1, 3, 1)])
def test_streaming_in_chunks_matches_one_block_causal_forward(small_vggt, images, causal, chunks):
    streamed, state = stream(small_vggt, images, chunks)
    assert state.frames_seen == S
    for key in KEYS:
        err = (streamed[key] - causal[key]).abs().max().item()
        assert err <= 1e-4, f"{key} differs by {err}"


def test_causal_outputs_of_a_frame_do_not_depend_on_later_frames(small_vggt, images, causal):
    with torch.no_grad():
        prefix = small_vggt(images[:, :3], causal=True)
    for key in KEYS:
        torch.testing.assert_close(prefix[key], causal[key][:, :3], atol=1e-4, rtol=1e-4)


def test_bidirectional_forward_lets_later_frames_change_earlier_ones(small_vggt, images, causal):
    with torch.no_grad():
        full = small_vggt(images)
    assert (full["pose_enc"][:, 0] - causal["pose_enc"][:, 0]).abs().max() > 1e-3


def test_reset_state_restarts_the_stream(small_vggt, images, causal):
    _, state = stream(small_vggt, images, (2, 3))
    state.reset()
    assert state.frames_seen == 0
    again, _ = stream(small_vggt, images, (1, 1, 1, 1, 1), state)
    torch.testing.assert_close(again["pose_enc"], causal["pose_enc"], atol=1e-4, rtol=1e-4)


def test_unbounded_caches_hold_every_token_of_every_frame(small_vggt, images):
    _, state = stream(small_vggt, images, (1, 1, 1, 1, 1))
    tokens_per_frame = 5 + 3 * 4  # camera + registers + 3x4 patches
    for layer in range(small_vggt.config.depth):
        assert state.kv_cache.num_tokens(layer) == S * tokens_per_frame
    camera_layers = small_vggt.camera_head.num_cache_layers
    assert all(state.camera_cache.num_tokens(i) == S for i in range(camera_layers))
    assert isinstance(state.kv_cache, UnboundedKVCache)


def test_bf16_autocast_streams_with_a_bf16_cache_and_fp32_outputs(small_vggt, images, causal):
    # The CUDA path (bf16 autocast) exercised on the CPU: cached keys/values take the
    # autocast precision, the heads run in fp32.
    state = StreamState()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [small_vggt(images[:, s:s + 1], stream=state) for s in range(2)]
    assert all(t.dtype == torch.bfloat16 for t in state.kv_cache.tensors(0))
    assert all(t.dtype == torch.float32 for t in state.camera_cache.tensors(0))
    for key in KEYS:
        assert outs[1][key].dtype == torch.float32 and torch.isfinite(outs[1][key]).all()
    pose = torch.cat([o["pose_enc"] for o in outs], dim=1)
    torch.testing.assert_close(pose, causal["pose_enc"][:, :2], atol=0.1, rtol=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_streaming_matches_cpu_within_bf16_tolerance(small_vggt, images, causal):
    gpu = VGGT(config=small_vggt.config).cuda().eval()
    gpu.load_state_dict(small_vggt.state_dict())
    state = StreamState()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        outs = [gpu(images[:, s:s + 1].cuda(), stream=state) for s in range(S)]
    pose = torch.cat([o["pose_enc"] for o in outs], dim=1).cpu()
    torch.testing.assert_close(pose, causal["pose_enc"], atol=0.1, rtol=0.1)
