"""Four sessions at once on a 2-worker server."""

from concurrent.futures import ThreadPoolExecutor

from conftest import FAST_OPTIONS, VIDEOS, Sess


def test_four_concurrent_sessions_all_complete_two_at_a_time(client):
    sessions = [Sess(client, FAST_OPTIONS) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:  # uploads arrive together
        responses = list(pool.map(lambda s: s.upload(VIDEOS / "room.mp4"), sessions))
    assert [r.status_code for r in responses] == [202] * 4
    finals = [s.wait(timeout=400) for s in sessions]
    assert [f["state"] for f in finals] == ["completed"] * 4, finals
    assert all(f["progress"]["frames_received"] == 8 for f in finals)
    # The pool runs at most 2 jobs at once: at any job's start, at most one other is running.
    spans = [(f["started_at"], f["finished_at"]) for f in finals]
    for start, _ in spans:
        assert sum(a <= start < b for a, b in spans) <= 2
    for s in sessions:
        names = {f["name"] for f in client.get(f"/sessions/{s.id}/results", headers=s.headers).json()["files"]}
        assert {"trajectory.json", "points.ply"} <= names
