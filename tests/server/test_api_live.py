"""Live frames over the WebSocket, pushed faster than real time."""

import json
import threading

import cv2
import psutil
import websockets.sync.client as ws_client
from conftest import DATA, FAST_OPTIONS, VIDEOS, Sess
from test_api_upload_e2e import _events

from server.frames import encode_frame

ROUNDS = 32  # the 23 DTU images (640x480), sent this many times: 736 frames


def _jpegs(size: tuple[int, int]) -> list[bytes]:
    """The DTU images (1600x1200), downscaled to ``size``, as JPEG."""
    out = []
    for path in sorted((DATA / "dtu_scan24" / "images").glob("*.png")):
        image = cv2.resize(cv2.imread(str(path)), size, interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    return out


def test_live_frames_faster_than_real_time_complete_and_report_drops_in_bounded_memory(client, server):
    # The model sees 128 px; frames arrive at 640x480. No Gaussian cache: its growth by design
    # would blur the server-side memory bound this test checks.
    s = Sess(client, {**FAST_OPTIONS, "gaussians": False})
    jpegs = _jpegs((640, 480))
    sent = ROUNDS * len(jpegs)
    server_proc = psutil.Process(server.proc.pid)
    url = server.url.replace("http", "ws") + f"/sessions/{s.id}/live"
    rss, acks = [], []
    with ws_client.connect(url, additional_headers=s.headers) as ws:
        def send_all():  # as fast as the socket takes them, without waiting for acks
            for seq in range(sent):
                ws.send(encode_frame(jpegs[seq % len(jpegs)], seq * 0.1))  # 10 fps of stream time

        sender = threading.Thread(target=send_all)
        sender.start()
        while len(acks) < sent:
            ack = json.loads(ws.recv(timeout=60))
            assert ack["type"] == "ack" and ack["seq"] == len(acks), ack
            acks.append(ack)
            if len(acks) % len(jpegs) == 0:
                rss.append(server_proc.memory_info().rss)
        sender.join()
        ws.send(json.dumps({"type": "end"}))
        closed = json.loads(ws.recv(timeout=60))
    assert closed["type"] == "closed" and closed["accepted"] == sent and closed["invalid"] == 0
    # Frames come as fast as the socket takes them: the live front end (decode, tracking) cannot keep
    # up, however fast the machine, and drops the oldest.
    assert closed["dropped"] > sent // 8
    assert [a["dropped"] for a in acks] == sorted(a["dropped"] for a in acks)
    assert max(a["pending"] for a in acks) <= server.live_queue
    # Frames are freed once decoded, dropped or not (the drop queue alone, with its shrunk frames:
    # tests/recon/test_ingest_live.py). Once the job has warmed up (model, lazily imported stages,
    # allocator arenas: the first half of the push), had the server kept each decoded 640x480 RGB
    # frame (0.9 MB) of the second half, RSS would have grown by that much for good. It does grow a
    # little with what the job maps, and a window being solved lifts it for a moment, so the end of
    # the push is read as the lowest of its last samples (a leak cannot go down again).
    half = len(rss) // 2
    decoded_late = sent - (half + 1) * len(jpegs)  # since rss[half]
    kept_if_leaked = decoded_late * 640 * 480 * 3
    grown = min(rss[-3:]) - rss[half]
    assert grown < kept_if_leaked / 4, ([r >> 20 for r in rss], kept_if_leaked >> 20)

    status = s.wait(timeout=240)
    assert status["state"] == "completed", status
    live = status["live"]
    assert (live["accepted"], live["dropped"], live["connected"]) == (sent, closed["dropped"], False)
    # Every accepted frame was either reconstructed or dropped, none lost silently.
    assert status["progress"]["frames_received"] == sent - closed["dropped"]
    index = client.get(f"/sessions/{s.id}/results", headers=s.headers).json()
    assert {"trajectory.json", "run.json"} <= {f["name"] for f in index["files"]}


def test_live_client_that_disconnects_without_end_still_completes(client, server):
    s = Sess(client, FAST_OPTIONS)
    jpegs = _jpegs((200, 150))[:10]
    with ws_client.connect(server.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                           additional_headers=s.headers) as ws:
        for i, jpeg in enumerate(jpegs):
            ws.send(encode_frame(jpeg, i * 0.5))
            ws.recv(timeout=60)
    status = s.wait(timeout=240)
    assert status["state"] == "completed" and status["live"]["accepted"] == 10


def _video_jpegs(path, limit: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    cap.release()
    return out


def test_live_frames_pushed_in_real_time_are_tracked_and_latency_is_in_progress_events(client, server):
    import time

    s = Sess(client, FAST_OPTIONS)
    jpegs = _video_jpegs(VIDEOS / "great_wall.mp4", 288)  # 640x360, 24 fps: 12 s
    events: list = []
    follower = threading.Thread(target=lambda: events.extend(_events(client, s)))
    follower.start()
    with ws_client.connect(server.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                           additional_headers=s.headers) as ws:
        acks = threading.Thread(target=lambda: [ws.recv(timeout=60) for _ in jpegs])
        acks.start()
        t0 = time.monotonic()
        for i, jpeg in enumerate(jpegs):  # in real time
            time.sleep(max(0.0, t0 + i / 24 - time.monotonic()))
            ws.send(encode_frame(jpeg, i / 24))
        acks.join()
        ws.send(json.dumps({"type": "end"}))
        assert json.loads(ws.recv(timeout=60))["type"] == "closed"
    follower.join(300)
    assert events and events[-1][0] == "end" and events[-1][1]["state"] == "completed", events[-1:]
    progress = [data["progress"] for event, data in events if event == "progress" and data.get("progress")]
    # Latency is reported while the stream runs, not only at its end.
    assert any(p["latency_p95_s"] > 0 for p in progress), progress[-1:]
    final = events[-1][1]["progress"]
    assert final["frames_posed_live"] > 0 and 0 < final["latency_p50_s"] <= final["latency_p95_s"]
    run = json.loads(client.get(f"/sessions/{s.id}/results/run.json", headers=s.headers).content)
    assert run["live_tracking"] is True and run["latency_s"]["live"]["frames"] == final["frames_posed_live"]
    assert 0 < run["latency_s"]["p50"] <= run["latency_s"]["p95"]
