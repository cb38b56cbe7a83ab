"""The tracked transaction written once (state/processor.py): every follower of the log commits its events and its
new position through `commit`, on a real SQLite log."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from state import events as ev
from state.eventlog import EventLog
from state.processor import commit

REPO = Path(__file__).resolve().parents[1]


def received(n: int) -> ev.PhotoReceived:
    return ev.PhotoReceived(path=f"p{n}.jpg", sha256=f"{n:064x}", size=n)


def test_commit_appends_and_moves_the_position_together(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.sqlite")
    log.append([received(1)])
    positions = commit(log, "toy", 0, [received(2), received(3)], lambda got: max([1, *got]))
    assert positions == [2, 3] and log.tracked("toy") == 3
    assert commit(log, "toy", 3, [], 3) == [] and log.tracked("toy") == 3  # nothing made: the position alone


def test_commit_records_nothing_when_another_process_moved_the_position(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.sqlite")
    assert commit(log, "toy", 0, [received(1)], 1) == [1]
    assert commit(log, "toy", 0, [received(2)], 2) is None  # started from 0, but the position is 1 now
    assert log.head() == 1 and log.tracked("toy") == 1


def test_a_failing_apply_leaves_neither_events_nor_position(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.sqlite")

    def apply(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE toy(x)")
        raise RuntimeError("the projection failed")

    with pytest.raises(RuntimeError):
        commit(log, "toy", 0, [received(1)], 1, apply=apply)
    assert log.head() == 0 and log.tracked("toy") == 0
    assert not log.conn.execute("SELECT name FROM sqlite_master WHERE name='toy'").fetchall()


def test_every_follower_tracks_its_position_through_commit() -> None:
    """No other module moves a tracked position or opens a follower's transaction of its own (issue 22)."""
    found = []
    for path in sorted([*REPO.glob("daemon/**/*.py"), *REPO.glob("handlers/**/*.py"), *REPO.glob("state/**/*.py")]):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.track\(", line) and "def track" not in line:
                found.append(f"{path.relative_to(REPO)}:{n}")
    assert [f.split(":")[0] for f in found] == ["state/processor.py"], found
