"""The event log: append-only in the database itself, gapless positions, compact embeddings."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from state import events as ev
from state.eventlog import EventLog


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "events.sqlite3")


def test_database_refuses_update_and_delete(log: EventLog, tmp_path: Path) -> None:
    log.append([ev.FaceMissing(path="faceset_001/faces/a.png")])
    raw = sqlite3.connect(tmp_path / "events.sqlite3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE events SET kind='x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM events")
    assert raw.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_roundtrip_and_embedding_stored_as_float32_bytes(log: EventLog, tmp_path: Path) -> None:
    e = ev.FaceAdded(path="faceset_001/faces/a.png", sha256="ab", size=3, mtime_ns=4, source={"photo": "/p.jpg"})
    (pos,) = log.append([e])
    assert log.get(pos).event == e
    vec = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    analyzed = ev.FaceAnalyzed(path="faceset_001/faces/a.png", sha256="ab", face_count=1, embedding=vec)
    (pos2,) = log.append([analyzed])
    vector, payload = sqlite3.connect(tmp_path / "events.sqlite3").execute(
        "SELECT vector, payload FROM events WHERE position=?", (pos2,)).fetchone()
    assert isinstance(vector, bytes) and len(vector) == 512 * 4
    assert "embedding" not in payload
    back = log.get(pos2).event
    assert isinstance(back, ev.FaceAnalyzed) and back.face_count == 1
    np.testing.assert_array_equal(back.embedding, vec)


def _appender(path: str, n: int, tag: str) -> None:
    log = EventLog(Path(path))
    for i in range(n):
        log.append([ev.FaceMissing(path=f"{tag}/{i}"), ev.FaceMissing(path=f"{tag}/{i}b")])
    log.close()


def test_positions_gapless_with_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    EventLog(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_appender, args=(str(path), 150, t)) for t in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = sqlite3.connect(path).execute("SELECT position, payload FROM events ORDER BY position").fetchall()
    positions = [r[0] for r in rows]
    assert positions == list(range(1, 601))
    # each append's two events are adjacent: appends are atomic
    for i in range(0, 600, 2):
        assert rows[i][1].replace('"}', 'b"}') == rows[i + 1][1]


def test_schema_version_and_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    EventLog(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    from state.errors import LogError

    with pytest.raises(LogError, match="newer"):
        EventLog(path)


def test_named_reads_by_subject_and_by_payload_field(log: EventLog) -> None:
    """The reads the Immich store uses instead of SQL: by subject, the latest of a kind, by payload field."""
    a, b = "http://a.test", "http://b.test"
    log.append([ev.ImmichWatermarkAdvanced(server=a, user="alice", value="1"),
                ev.ImmichAssetDeferred(server=a, user="alice", asset_id="x"),
                ev.ImmichWatermarkAdvanced(server=a, user="alice", value="2"),
                ev.ImmichAssetImported(server=b, user="bob", asset_id="y", sha256="f" * 64),
                ev.ImmichAssetImported(server=a, user="alice", asset_id="z", sha256="e" * 64)])
    subject = f"immich:{a}:alice"
    assert [s.position for s in log.read_subject(subject)] == [1, 2, 3]
    assert [s.position for s in log.read_subject(subject, [ev.ImmichAssetDeferred.KIND])] == [2]
    latest = log.latest(subject, ev.ImmichWatermarkAdvanced.KIND)
    assert latest is not None and latest.position == 3 and latest.event == ev.ImmichWatermarkAdvanced(a, "alice", "2")
    assert log.latest(f"immich:{b}:bob", ev.ImmichWatermarkAdvanced.KIND) is None
    assert log.has_subject("sha256:" + "f" * 64, [ev.ImmichAssetImported.KIND])
    assert not log.has_subject("sha256:" + "f" * 64, [ev.ImmichAssetDeferred.KIND])
    assert [s.position for s in log.read_matching(ev.ImmichAssetImported.KIND, server=b)] == [4]
    assert [s.position for s in log.read_matching(ev.ImmichAssetImported.KIND, server=a, user="alice")] == [5]
    # a field name is a bound JSON path, never SQL text
    assert log.read_matching(ev.ImmichAssetImported.KIND, **{"server') OR 1=1 --": a}) == []
