"""Sessions and auth against a real uvicorn."""

from conftest import Sess, assert_error


def test_create_session_returns_id_token_and_defaults(client):
    r = client.post("/sessions", json={"resolution": 256, "target_fps": 4})
    assert r.status_code == 201
    body = r.json()
    assert len(body["id"]) == 32 and len(body["token"]) >= 40
    assert body["state"] == "created"
    assert body["options"]["resolution"] == 256 and body["options"]["window"] == 20
    assert body["links"]["upload"] == f"/sessions/{body['id']}/upload"


def test_create_session_without_a_body_uses_defaults(client):
    r = client.post("/sessions")
    assert r.status_code == 201 and r.json()["options"]["backend"] == "default"


def test_status_needs_the_sessions_own_token(client):
    a, b = Sess(client), Sess(client)
    assert a.status()["state"] == "created"
    assert_error(client.get(f"/sessions/{a.id}"), 401, "missing_token")
    assert_error(client.get(f"/sessions/{a.id}", headers=b.headers), 403, "wrong_token")
    assert_error(client.get(f"/sessions/{a.id}", headers={"Authorization": "Basic Zm9vOmJhcg=="}), 401)
    for path in ("/results", "/events"):
        assert_error(client.get(f"/sessions/{a.id}{path}", headers=b.headers), 403, "wrong_token")
    assert_error(client.delete(f"/sessions/{a.id}", headers=b.headers), 403)
    assert a.status()["state"] == "created"  # b's token did nothing to a


def test_options_are_validated(client):
    assert_error(client.post("/sessions", json={"overlap": 10, "window": 10}), 422, "invalid_request")
    assert_error(client.post("/sessions", json={"window": 1}), 422)
    assert_error(client.post("/sessions", json={"colour": "red"}), 422)
    assert_error(client.post("/sessions", json={"backend": "vggt"}), 400, "backend_unavailable")


def test_delete_removes_the_session(client, server):
    s = Sess(client)
    session_dir = server.data_dir / "sessions" / s.id
    assert session_dir.is_dir()
    assert client.delete(f"/sessions/{s.id}", headers=s.headers).status_code == 204
    assert not session_dir.exists()
    assert_error(client.get(f"/sessions/{s.id}", headers=s.headers), 404, "session_not_found")


def test_results_of_a_session_without_input_are_empty(client):
    s = Sess(client)
    r = client.get(f"/sessions/{s.id}/results", headers=s.headers)
    assert r.status_code == 200 and r.json()["files"] == []
    assert_error(client.get(f"/sessions/{s.id}/results/points.ply", headers=s.headers), 409, "results_not_ready")
    assert_error(client.get(f"/sessions/{s.id}/results/secrets.txt", headers=s.headers), 422)


def test_stop_without_input_is_a_conflict(client):
    s = Sess(client)
    assert_error(client.post(f"/sessions/{s.id}/stop", headers=s.headers), 409, "nothing_to_stop")


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/openapi.json").json()
    assert {"/sessions", "/sessions/{session_id}/upload", "/sessions/{session_id}/results/{name}"} <= set(schema["paths"])
    assert "SessionStatus" in schema["components"]["schemas"]
    assert "SessionToken" in schema["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_health_reports_workers(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["workers"] == 2


def test_server_log_is_json_lines_that_never_contain_tokens(client, server):
    import json

    import websockets.sync.client as ws_client
    from websockets.exceptions import InvalidStatus

    s = Sess(client)
    client.get(f"/sessions/{s.id}", headers=s.headers)
    try:  # a token in the query string (the browser WebSocket form) must not reach the log either
        ws_client.connect(server.url.replace("http", "ws") + f"/sessions/{'0' * 32}/live?access_token={s.token}")
    except InvalidStatus:
        pass
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "request"]
    assert any(r["path"] == f"/sessions/{s.id}" and r["status"] == 200 for r in requests)
    assert all({"ts", "level", "logger", "event"} <= line.keys() for line in lines)
    assert s.token not in server.log_path.read_text()
