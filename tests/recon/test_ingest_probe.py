"""The ``stream4d probe`` command."""

from __future__ import annotations

import json

from _ingest_media import DATA, VIDEOS

from stream4d.cli import main


def _probe_json(capsys, *args):
    code = main(["probe", *map(str, args), "--json", "--no-progress"])
    return code, json.loads(capsys.readouterr().out)


def test_probe_reports_a_video_with_its_counts_and_timing(capsys):
    code, report = _probe_json(capsys, VIDEOS / "great_wall.mp4", "--stride", "4", "--resize", "vggt")
    assert code == 0
    assert report["input"] == {"kind": "video", "name": "great_wall.mp4", "fps": 24.0,
                               "frame_count": 288, "size": [640, 360]}
    assert report["frames"]["decoded"] == 288 and report["frames"]["yielded"] == 72
    assert report["frames"]["skipped_stride"] == 216
    assert report["output_sizes"] == [[518, 294]]
    assert abs(report["timestamps"]["mean_fps"] - 6.0) < 1e-6
    assert report["timing"]["frames_per_s"] > 0 and report["error"] is None


def test_probe_reports_a_dataset(capsys):
    code, report = _probe_json(capsys, DATA / "llff_fern" / "cameras_images_8.json", "--max-frames", "3")
    assert code == 0
    assert report["input"]["kind"] == "dataset" and report["input"]["frame_count"] == 20
    assert report["frames"]["yielded"] == 3


def test_probe_of_a_truncated_video_reports_what_was_read_and_exits_1(capsys, tmp_path):
    data = (VIDEOS / "great_wall.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    code, report = _probe_json(capsys, cut)
    assert code == 1
    assert report["error"]["reason"] == "corrupt"
    assert 0 < report["frames"]["yielded"] < 288


def test_probe_of_a_missing_input_exits_2_with_a_message(capsys, tmp_path):
    code = main(["probe", str(tmp_path / "none.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "none.mp4" in err and "no such file" in err


def test_probe_prints_a_table_by_default(capsys):
    code = main(["probe", str(VIDEOS / "room.mp4"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "room.mp4" in out and "frames.yielded" in out and "512x384" in out
