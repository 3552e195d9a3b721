"""InfiniteVGGT's pruning policy: diversity scores, per-head selection, adaptive layer budgets."""

import math

import pytest
import torch

from memory.kv_pruning import gather_tokens, key_similarity_scores, layer_budgets, select_diverse


def test_identical_keys_score_one_and_opposite_keys_minus_one():
    keys = torch.tensor([1.0, 2.0, 0.5, -1.0]).repeat(1, 1, 6, 1)  # [1, 1, 6, 4], all equal
    torch.testing.assert_close(key_similarity_scores(keys), torch.ones(1, 1, 6))
    mixed = torch.cat([keys, -keys[:, :, :1]], dim=2)  # mean still points along the majority
    assert key_similarity_scores(mixed)[0, 0, -1] == pytest.approx(-1.0)


def test_scores_ignore_key_length():
    keys = torch.randn(2, 3, 10, 8, generator=torch.Generator().manual_seed(0))
    lengths = torch.rand(2, 3, 10, 1, generator=torch.Generator().manual_seed(1)) * 5 + 0.1
    torch.testing.assert_close(key_similarity_scores(keys * lengths), key_similarity_scores(keys))


def test_the_most_diverse_tokens_are_kept_in_temporal_order():
    g = torch.Generator().manual_seed(0)
    common = torch.randn(16, generator=g)
    keys = common + 0.01 * torch.randn(1, 1, 12, 16, generator=g)  # near-duplicates ...
    outliers = [9, 2, 6]
    for i in outliers:  # ... and three different tokens
        keys[0, 0, i] = torch.randn(16, generator=g)
    keep = select_diverse(key_similarity_scores(keys), 3)
    assert keep.tolist() == [[sorted(outliers)]]


def test_each_head_keeps_its_own_set():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(1, 1, 1, 8, generator=g).repeat(1, 2, 10, 1) + 0.01 * torch.randn(1, 2, 10, 8, generator=g)
    keys[0, 0, 3] = torch.randn(8, generator=g)
    keys[0, 1, 7] = torch.randn(8, generator=g)
    keep = select_diverse(key_similarity_scores(keys), 1)
    assert keep[0, :, 0].tolist() == [3, 7]


def test_gather_tokens_picks_per_head_rows_of_any_trailing_shape():
    x = torch.arange(2 * 3 * 5 * 4).reshape(2, 3, 5, 4)
    index = torch.tensor([[0, 4], [1, 2], [3, 3]]).expand(2, 3, 2)
    out = gather_tokens(x, index)
    assert out.shape == (2, 3, 2, 4)
    assert torch.equal(out[1, 2, 0], x[1, 2, 3])
    frames = torch.arange(5).expand(2, 3, 5)
    assert gather_tokens(frames, index)[0, 0].tolist() == [0, 4]


def test_budgets_start_uniform_and_follow_the_softmax_of_diversity():
    assert layer_budgets([0.0] * 24, 1_200_000) == [50_000] * 24
    scores = [0.9, 0.5, 0.1]
    budgets = layer_budgets(scores, 1000)
    weights = [math.exp((1 - s) / 0.5) for s in scores]
    expected = [math.floor(1000 * w / sum(weights)) for w in weights]
    assert budgets == expected and sum(budgets) <= 1000
    assert budgets[0] < budgets[1] < budgets[2]  # diverse layers get more


def test_lower_temperature_sharpens_the_split():
    soft, sharp = layer_budgets([0.2, 0.8], 1000, 1.0), layer_budgets([0.2, 0.8], 1000, 0.1)
    assert sharp[0] > soft[0] > 500


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="keep"):
        select_diverse(torch.zeros(1, 1, 3), -1)
    with pytest.raises(ValueError, match="budget"):
        layer_budgets([0.0], -5)
