"""The pruned streaming KV cache with the real (small) VGGT network, and the bounded VGGT backend."""

import json

import cv2
import pytest
import torch

from memory.kv_cache import PrunedKVCache
from recon.vggt import VGGT, VGGTConfig
from recon.vggt.models.streaming import StreamState
from stream4d.contracts import Frame
from stream4d.pipeline.vggt_stream import CheckpointError, load_vggt_backend
from stream4d.testdata import SHARED_DATA

TOKENS_PER_FRAME = 5 + 3 * 4  # camera + registers + 3x4 patches of a 56x42 image
CONFIG = VGGTConfig.small(enable_track=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> VGGT:
    torch.manual_seed(0)
    return VGGT(config=CONFIG).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, 24, 3, 42, 56, generator=torch.Generator().manual_seed(5))


def stream(model, images, state):
    outs = []
    with torch.no_grad():
        for s in range(images.shape[1]):
            outs.append(model(images[:, s:s + 1], stream=state))
    return outs


def test_cache_within_budget_streams_exactly_like_a_block_causal_forward(model, images):
    x = images[:, :6]
    state = StreamState(PrunedKVCache(CONFIG.depth, 10 ** 9), PrunedKVCache(16, 10 ** 9))
    streamed = torch.cat([o["depth"] for o in stream(model, x, state)], dim=1)
    with torch.no_grad():
        causal = model(x, causal=True)["depth"]
    assert (streamed - causal).abs().max().item() <= 1e-4
    assert state.kv_cache.prunings == 0


def test_cache_size_plateaus_at_the_budget_and_keeps_the_first_frame(model, images):
    budget = CONFIG.depth * 4 * TOKENS_PER_FRAME  # ~4 frames per layer
    kv = PrunedKVCache(CONFIG.depth, budget)
    camera = PrunedKVCache(16, 16 * 3, adaptive=False)
    state = StreamState(kv, camera)
    sizes = []
    with torch.no_grad():
        for s in range(images.shape[1]):
            model(images[:, s:s + 1], stream=state)
            sizes.append(kv.total_tokens)
    assert max(sizes) <= budget
    assert sizes[:4] == [TOKENS_PER_FRAME * CONFIG.depth * (s + 1) for s in range(4)]  # grows until full ...
    assert min(sizes[6:]) >= budget - CONFIG.depth * TOKENS_PER_FRAME  # ... then stays full (a plateau)
    for layer in range(CONFIG.depth):
        frames = kv.retained_frames(layer)  # [B, heads, N]
        assert kv.num_anchor_tokens(layer) == TOKENS_PER_FRAME
        assert ((frames == 0).sum(-1) == TOKENS_PER_FRAME).all()  # every head keeps all anchor tokens
        assert (frames.diff(dim=-1) >= 0).all()  # temporal order
        assert kv.num_tokens(layer) <= kv.budgets[layer]
    assert all(camera.num_tokens(i) == 3 for i in range(16))  # the camera trunk is bounded too
    assert kv.prunings > 0 and any(s != 0.0 for s in kv.mean_scores)


def test_heads_retain_different_tokens(model, images):
    kv = PrunedKVCache(CONFIG.depth, CONFIG.depth * 3 * TOKENS_PER_FRAME)
    stream(model, images[:, :10], StreamState(kv, PrunedKVCache(16, 10 ** 6)))
    frames = kv.retained_frames(CONFIG.depth - 1)[0]  # [heads, N]
    assert any(not torch.equal(frames[0], frames[h]) for h in range(1, frames.shape[0]))


def test_budgets_adapt_to_layer_scores_and_stay_within_the_total(model, images):
    total = CONFIG.depth * 3 * TOKENS_PER_FRAME
    kv = PrunedKVCache(CONFIG.depth, total)
    assert len(set(kv.budgets)) == 1  # uniform before anything was pruned
    stream(model, images[:, :10], StreamState(kv, PrunedKVCache(16, 10 ** 6)))
    assert len(set(kv.budgets)) > 1 and sum(kv.budgets) <= total
    fixed = PrunedKVCache(CONFIG.depth, total, adaptive=False)
    stream(model, images[:, :10], StreamState(fixed, PrunedKVCache(16, 10 ** 6)))
    assert len(set(fixed.budgets)) == 1


def test_reset_empties_every_layer():
    kv = PrunedKVCache(2, 100)
    k = torch.randn(1, 2, 5, 4)
    kv.extend(0, k, k, torch.zeros(5, dtype=torch.long))
    assert kv.total_tokens == 5 and kv.nbytes > 0
    kv.reset()
    assert kv.total_tokens == 0 and kv.nbytes == 0 and kv.prunings == 0


def test_extend_returns_the_retained_past_followed_by_all_new_tokens():
    kv = PrunedKVCache(1, 6)
    first = torch.randn(1, 2, 4, 8)
    k_all, _ = kv.extend(0, first, first, torch.zeros(4, dtype=torch.long))
    assert torch.equal(k_all, first)
    new = torch.randn(1, 2, 4, 8)
    k_all, v_all = kv.extend(0, new, new, torch.ones(4, dtype=torch.long))
    assert k_all.shape[2] == 8 and torch.equal(k_all[:, :, 4:], new)  # nothing new is hidden from attention
    assert kv.num_tokens(0) == 6  # ... but only the budget is kept afterwards
    with pytest.raises(IndexError, match="layer 3"):
        kv.extend(3, new, new, torch.ones(4, dtype=torch.long))


def test_anchor_is_kept_even_when_the_budget_is_smaller():
    kv = PrunedKVCache(1, 2)
    kv.extend(0, torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8), torch.zeros(4, dtype=torch.long))
    kv.extend(0, torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8), torch.ones(4, dtype=torch.long))
    assert kv.num_tokens(0) == 4 and (kv.retained_frames(0) == 0).all()


def fern_frames(n: int) -> list[Frame]:
    root = SHARED_DATA / "llff_fern"
    cams = json.loads((root / "cameras_images_8.json").read_text())["frames"][:n]
    return [Frame(index=i, timestamp=float(i), source=c["image"],
                  image=cv2.cvtColor(cv2.imread(str(root / c["image"])), cv2.COLOR_BGR2RGB))
            for i, c in enumerate(cams)]


def test_load_vggt_backend_streams_real_windows_with_bounded_memory(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "model.pt")
    budget = CONFIG.depth * 4 * TOKENS_PER_FRAME
    backend = load_vggt_backend(tmp_path / "model.pt", "cpu", total_budget_tokens=budget, camera_budget_frames=4,
                                model_config=CONFIG, image_width=56)
    frames = fern_frames(20)
    totals = []
    for start in range(0, 18, 3):  # windows of 5 frames overlapping by 2
        pred = backend.predict(frames[start:start + 5])
        assert pred.num_frames == len(frames[start:start + 5])
        totals.append(pred.info["kv_cache"]["total_tokens"])
    assert backend.state.frames_seen == 20
    assert max(totals) <= budget and min(totals[-3:]) >= budget - CONFIG.depth * TOKENS_PER_FRAME
    assert backend.state.camera_cache.num_tokens(0) == 4


def test_load_vggt_backend_reports_a_bad_checkpoint(model, tmp_path):
    state = dict(model.state_dict())
    state.pop("camera_head.embed_pose.weight")
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"camera_head\.embed_pose\.weight"):
        load_vggt_backend(tmp_path / "model.pt", "cpu", model_config=CONFIG)
