"""The run's configuration tree: one default per knob, plain data in run.json and back."""

from __future__ import annotations

import json

import pytest

from align import AlignConfig
from memory.gaussians import GaussianCacheConfig
from recon.ingest import IngestError
from stream4d.pipeline import ReconstructConfig, load_config


def test_the_tree_survives_json_unchanged():
    config = ReconstructConfig().override({"align.window": 12, "ingest.target_fps": 5.0, "model.sfm.ba_every": 4,
                                           "viz.rrd_path": "/tmp/x.rrd", "cache.window_max_side": None})
    back = ReconstructConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config
    assert isinstance(back.model.dense.target_baseline_ratios, tuple)  # JSON lists come back as the declared tuples


def test_stage_defaults_are_the_stages_own():
    config = ReconstructConfig()
    assert config.align == AlignConfig() and config.cache == GaussianCacheConfig()
    assert config.ingest.resize == 512 and config.tail_merge == 5


def test_load_config_reads_a_run_json_or_a_bare_tree(tmp_path):
    config = ReconstructConfig().override({"align.window": 9, "align.overlap": 2})
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"format_version": 1, "config": config.to_dict(), "stats": {}}))
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"align": {"window": 9, "overlap": 2}}))  # absent keys take their defaults
    assert load_config(run) == config == load_config(tree)


@pytest.mark.parametrize("data, message", [
    ({"window": 8}, "unknown config key.*window"),
    ({"cache": {"max_gausians": 5}}, r"config\.cache.*max_gausians"),
    ({"align": 8}, "config.align must be a JSON object"),
    ({"align": {"window": 4, "overlap": 4}}, "overlap"),
    ({"final_ba_max_observations": 10}, "final_ba_max_observations must be an integer of at least 1000"),
    ({"final_ba_tracked_observations": -1}, "final_ba_tracked_observations must be an integer of at least 0"),
    ({"final_ba_lens": "yes"}, "final_ba_lens must be true or false"),
])
def test_a_bad_tree_is_refused_with_the_key_named(data, message):
    with pytest.raises(ValueError, match=message):
        ReconstructConfig.from_dict(data)


def test_bad_values_are_caught_by_the_stage_that_owns_them():
    with pytest.raises(IngestError, match="stride"):
        ReconstructConfig().override({"ingest.stride": 0})
    with pytest.raises(ValueError, match="window_max_side"):
        ReconstructConfig().override({"cache.window_max_side": -4})
    with pytest.raises(ValueError, match="unknown config key 'align.windw'"):
        ReconstructConfig().override({"align.windw": 8})


def test_the_vggt_backend_always_takes_vggt_preprocessing():
    assert ReconstructConfig(backend="vggt").ingest.resize == "vggt"
    assert ReconstructConfig().override({"backend": "vggt", "ingest.resize": 256}).ingest.resize == "vggt"


def test_a_section_given_in_part_keeps_the_runs_defaults_for_the_rest(tmp_path):
    # A run resizes to 512 px, which IngestOptions alone does not: a --config naming one ingest knob
    # must not switch the run to full resolution.
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"ingest": {"stride": 2}, "align": {"window": 12}}))
    config = load_config(path)
    assert config.ingest.stride == 2 and config.ingest.resize == 512
    assert config.align.window == 12 and config.align.overlap == AlignConfig().overlap
    assert ReconstructConfig.from_dict({"ingest": {"resize": None}}).ingest.resize is None  # said, and kept
