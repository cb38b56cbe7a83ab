"""Projection appliers of the corrections a person makes (daemon/corrections.py) and of uncertain matches.

Registered in the same registry as state/corpus_state.py's own (it imports this module at its end).
"""

from __future__ import annotations

import sqlite3

from . import events as ev
from .corpus_state import applies, apply_moves, mark_dirty, record_decision
from .eventlog import StoredEvent
from .layout import parse_face_path


@applies(ev.FaceMoved)
def _face_moved(conn: sqlite3.Connection, se: StoredEvent[ev.FaceMoved]) -> None:
    e = se.event
    record_decision(conn, se.position, e, e.sha256)
    if e.face_ids:  # it left the pool: no longer a pool face, nor anyone's candidate
        conn.executemany("DELETE FROM pool WHERE face_id=?", [(f,) for f in e.face_ids])
        conn.executemany("DELETE FROM candidates WHERE face_id=?", [(f,) for f in e.face_ids])
    src, dest = parse_face_path(e.path), parse_face_path(e.dest)
    if src is not None:  # the faceset it leaves changes too (a row move marks only where it goes)
        mark_dirty(conn, src.faceset)
    # A face moved to a faceset's _dropped/ sits there like a pruned one, under this decision.
    apply_moves(conn, e.moves, se.position if dest is not None and dest.dropped else None, at=se.position)
    if dest is not None and not dest.dropped and e.face_id:  # into a faceset: a veto for it no longer holds
        conn.execute("DELETE FROM vetoes WHERE face_id=? AND faceset=?", (e.face_id, dest.faceset))
    if e.veto:
        conn.execute("INSERT OR IGNORE INTO vetoes(face_id, faceset) VALUES (?,?)", (e.face_id, e.veto))
    if e.undoes:
        conn.execute("UPDATE decisions SET state='reverted' WHERE position=?", (e.undoes,))
    mark_dirty(conn)


@applies(ev.FacesetLabelled)
def _labelled(conn: sqlite3.Connection, se: StoredEvent[ev.FacesetLabelled]) -> None:
    e = se.event
    if e.label:
        conn.execute("INSERT OR REPLACE INTO labels(faceset, label) VALUES (?,?)", (e.faceset, e.label))
    else:
        conn.execute("DELETE FROM labels WHERE faceset=?", (e.faceset,))
    mark_dirty(conn, e.faceset)


@applies(ev.FaceCandidate)
def _candidate(conn: sqlite3.Connection, se: StoredEvent[ev.FaceCandidate]) -> None:
    e = se.event
    conn.execute("INSERT OR REPLACE INTO candidates(face_id, faceset, distance, position) VALUES (?,?,?,?)",
                 (e.face_id, e.faceset, e.distance, se.position))
    conn.execute("DELETE FROM vetoes WHERE face_id=? AND faceset=?", (e.face_id, e.faceset))


@applies(ev.CandidateRejected)
def _candidate_rejected(conn: sqlite3.Connection, se: StoredEvent[ev.CandidateRejected]) -> None:
    e = se.event
    conn.execute("DELETE FROM candidates WHERE face_id=? AND faceset=?", (e.face_id, e.faceset))
    conn.execute("INSERT OR IGNORE INTO vetoes(face_id, faceset) VALUES (?,?)", (e.face_id, e.faceset))


@applies(ev.DecisionReapplied)
def _reapplied(conn: sqlite3.Connection, se: StoredEvent[ev.DecisionReapplied]) -> None:
    e = se.event
    record_decision(conn, se.position, e)
    conn.execute("UPDATE decisions SET state='reverted' WHERE position=?", (e.target,))
    row = conn.execute("SELECT kind, check_name, sha256, subject FROM decisions WHERE position=?",
                       (e.original,)).fetchone()
    conn.execute("UPDATE decisions SET state='done' WHERE position=?", (e.original,))
    face_decision = row is not None and row[0] in (ev.FacePruned.KIND, ev.FaceUnrouted.KIND)
    apply_moves(conn, e.moves, e.original if face_decision else None, at=se.position)
    if row is not None:  # the override the restore pinned goes with it: the original decision holds again
        _kind, check, sha, subject = row
        fp = parse_face_path(subject)
        faceset = fp.faceset if fp is not None else subject.split("/")[-1]
        conn.execute("DELETE FROM overrides WHERE faceset=? AND check_name=? AND sha256=?",
                     (faceset, check, sha or "*"))



HELD = "*"  # the veto row of a pool face the promotion leaves alone (PoolFacesHeld)


@applies(ev.PoolFacesHeld)
def _held(conn: sqlite3.Connection, se: StoredEvent[ev.PoolFacesHeld]) -> None:
    conn.executemany("INSERT OR IGNORE INTO vetoes(face_id, faceset) VALUES (?,?)",
                     [(f, HELD) for f in se.event.face_ids])
