"""Chunked uploads (``"chunks"`` in the session options) through the HTTP API of a real server on
the local runner: the parts run one after another in the job's worker and are joined into the
same result files as a normal upload; chunk options that cannot work are refused with a 400
(out-of-range values, like every option's, with a 422)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import websockets.sync.client as ws_client
from conftest import FAST_OPTIONS, Sess, assert_error
from websockets.exceptions import InvalidStatus

from stream4d.outputs import read_trajectory_json

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "demo.mp4"  # 48 frames
CHUNKED = {**FAST_OPTIONS, "chunks": 2, "chunk_overlap": 8, "chunk_anchor_stride": 4}
RESULTS = {"trajectory.json", "trajectory.tum", "points.ply", "splats.ply", "recording.rrd", "run.json"}


@pytest.mark.parametrize("extra, clash", [({"stride": 2}, "stride"), ({"max_frames": 20}, "max_frames"),
                                          ({"target_fps": 5.0}, "target_fps"),
                                          ({"drop_duplicates": True}, "drop_duplicates")])
def test_chunks_with_options_that_select_frames_are_a_400(client, extra, clash):
    err = assert_error(client.post("/sessions", json={**CHUNKED, **extra}), 400, "bad_chunk_options")
    assert clash in err["message"]


@pytest.mark.parametrize("bad", [{"chunks": 1}, {"chunks": 65}, {"chunks": "2"}, {"chunk_overlap": 2},
                                 {"chunk_anchor_stride": 1}])
def test_out_of_range_chunk_options_are_refused_like_every_option(client, bad):
    err = assert_error(client.post("/sessions", json={**CHUNKED, **bad}), 422, "invalid_request")
    assert next(iter(bad)) in err["message"]


def test_a_video_too_short_for_its_chunks_is_a_400_and_the_session_keeps_waiting(client):
    s = Sess(client, {**CHUNKED, "chunks": 8, "chunk_overlap": 16})
    err = assert_error(s.upload(DEMO), 400, "video_too_short_for_chunks")
    assert "48 frames" in err["message"]
    assert s.status()["state"] == "created"  # the refused video was not kept


def test_chunks_on_a_pulled_or_live_stream_are_a_400(client, server):
    s = Sess(client, CHUNKED)
    r = client.post(f"/sessions/{s.id}/source", json={"url": "http://127.0.0.1:9/x.mp4"}, headers=s.headers)
    assert_error(r, 400, "chunks_need_upload")
    with pytest.raises(InvalidStatus) as err:
        with ws_client.connect(server.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                               additional_headers=s.headers):
            pass
    assert err.value.response.status_code == 400
    assert json.loads(err.value.response.body)["error"]["code"] == "chunks_need_upload"
    assert s.status()["state"] == "created"


def test_a_chunked_upload_on_the_local_runner_gives_every_result_file(client, tmp_path):
    s = Sess(client, CHUNKED)
    assert s.upload(DEMO, filename="demo.mp4").status_code == 202
    final = s.wait(timeout=240)
    assert final["state"] == "completed", final
    assert final["progress"]["frames_posed"] == 48
    index = client.get(f"/sessions/{s.id}/results", headers=s.headers).json()
    assert {f["name"] for f in index["files"]} == RESULTS
    frames = read_trajectory_json(s.download("trajectory.json", tmp_path))
    assert [f.index for f in frames] == list(range(48))
    run = json.loads(s.download("run.json", tmp_path).read_text())
    chunked = run["chunked"]
    assert (chunked["chunks"], chunked["overlap"], chunked["anchor_stride"], chunked["runner"]) == (2, 8, 4, "local")
    assert [p["part"] for p in chunked["parts"]] == ["anchor", "000", "001"]  # in plan order
    assert all(p["seconds"] > 0 for p in chunked["parts"])
    assert chunked["join"]["method"] == "pose_graph" and chunked["join"]["frames"] == 48


def test_a_stopped_chunked_upload_completes_with_the_chunks_it_reconstructed(client, tmp_path):
    s = Sess(client, CHUNKED)
    assert s.upload(DEMO, filename="demo.mp4").status_code == 202
    s.wait_until(lambda st: st["state"] == "running" and st["progress"]["frames_processed"] > 0, timeout=120,
                 what="the first chunk's progress")
    assert client.post(f"/sessions/{s.id}/stop", headers=s.headers).status_code == 202
    final = s.wait(timeout=240)
    assert final["state"] == "completed", final
    assert any("stopped early" in note for note in final["notes"]), final["notes"]
    frames = read_trajectory_json(s.download("trajectory.json", tmp_path))
    assert 0 < len(frames) < 48
    run = json.loads(s.download("run.json", tmp_path).read_text())
    assert run["chunked"]["stopped"] is True
    assert "anchor" not in [p["part"] for p in run["chunked"]["parts"]]  # the anchor runs last locally
