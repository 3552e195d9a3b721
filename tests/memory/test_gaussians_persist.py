"""The static Gaussian map saved and loaded (a persistent map's gaussians.npz), and continued by a new stream."""

from __future__ import annotations

import numpy as np
import pytest
from test_gaussians_cache import H, W, fill, window_of

from memory.gaussians import GaussianCache
from memory.gaussians.persist import load_arrays, save_store, store_from_arrays
from memory.gaussians.store import STATIC_FIELDS
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence


@pytest.fixture(scope="module")
def sweep():
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("sideways", 12, seed=0, scene=scene)
    return list(render_sequence(scene, c2w, intrinsics_for(W, H, 60), W, H, fps=10.0))


def test_the_static_map_round_trips_through_npz_column_for_column(sweep, tmp_path):
    cache = GaussianCache()
    fill(cache, sweep[:6])
    arrays = cache.map_arrays()
    back = load_arrays(save_store(tmp_path / "gaussians.npz", arrays))
    loaded = GaussianCache()
    loaded.load_map(0, back)
    assert loaded.num_static == cache.num_static > 1000 and loaded.voxel_size == pytest.approx(cache.voxel_size)
    for name in STATIC_FIELDS:
        if name != "last_view":
            np.testing.assert_array_equal(loaded._static[name], cache._static[name])
    # Ages are kept relative to the saving run's view counter: the loading run's first view is view 0,
    # the saving run's last one view -1.
    assert loaded._static["last_view"].max() == -1 and loaded._static["last_view"].min() == -6
    a, b = cache.render(sweep[7].c2w, sweep[7].K, W, H), loaded.render(sweep[7].c2w, sweep[7].K, W, H)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_a_malformed_map_is_refused_with_the_column_named(sweep):
    cache = GaussianCache()
    fill(cache, sweep[:2])
    arrays = cache.map_arrays()
    arrays["scales"] = arrays["scales"][:, :2]
    with pytest.raises(ValueError, match="column scales has shape"):
        store_from_arrays(arrays)
    arrays["version"] = np.int64(99)
    with pytest.raises(ValueError, match="version 99"):
        store_from_arrays(arrays)


def test_a_stream_that_starts_in_a_shelved_map_continues_it(sweep):
    saved = GaussianCache()
    fill(saved, sweep[:6])
    cache = GaussianCache()
    cache.shelve_map(0, saved.map_arrays())
    counts = cache.add_window(window_of(sweep[4:8], [True] * 4))  # a window the aligner placed in segment 0
    assert not counts["reset"] and cache.shelved_segments == []
    assert counts["added"] < counts["merged"] + counts["covered"]  # most of what it sees is the map's
    assert cache.num_static == saved.num_static + counts["added"] - counts["evicted"] - counts["refuted"]
