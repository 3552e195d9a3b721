import sqlite3

import pytest

from server.store import SessionStore, hash_token


def test_create_stores_only_the_token_hash(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    rec, token = store.create({"window": 8})
    raw = sqlite3.connect(tmp_path / "s.db").execute("SELECT * FROM sessions").fetchall()
    assert token not in repr(raw)
    assert rec.token_hash == hash_token(token) and len(rec.id) == 32
    assert rec.token_matches(token)
    assert not rec.token_matches(token + "x")
    assert not rec.token_matches("")


def test_records_survive_reopening_the_database(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    rec, _ = store.create({"window": 8})
    store.update(rec.id, kind="upload", state="queued", upload={"bytes": 3}, notes=["a"])
    store.close()
    again = SessionStore(tmp_path / "s.db").get(rec.id)
    assert (again.kind, again.state, again.upload, again.notes, again.options) == (
        "upload", "queued", {"bytes": 3}, ["a"], {"window": 8})


def test_transition_only_applies_from_the_given_states(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    rec, _ = store.create({})
    assert store.transition(rec.id, ["queued"], state="running") is None
    assert store.get(rec.id).state == "created"
    assert store.transition(rec.id, ["created"], state="queued").state == "queued"
    assert [r.id for r in store.in_states(["queued"])] == [rec.id]


def test_update_rejects_unknown_fields_and_states(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    rec, _ = store.create({})
    with pytest.raises(ValueError, match="token_hash"):
        store.update(rec.id, token_hash="x")
    with pytest.raises(ValueError, match="state"):
        store.update(rec.id, state="exploded")


def test_delete_makes_the_session_unknown(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    rec, _ = store.create({})
    assert store.delete(rec.id)
    assert store.get(rec.id) is None
    assert store.update(rec.id, state="queued") is None
    assert not store.delete(rec.id)
