"""What `facesetd status` shows, read from the event log's corpus state alone: counts, every faceset, the pool, the
candidates and the pending work.

Apart from daemon/pipeline.py, which runs the checks: a status reads, so it imports no check, no model interface
and no clustering. Only a pool that holds faces is clustered (pool_summary), and that brings the pipeline's checks
context with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from handlers.inbox_files import blocked_folder
from handlers.tracked import unhandled
from state import names
from state.corpus_state import CorpusState
from state.layout import AREA_NAMES, AREAS
from state.queries import FacesetCount

from .inbox import list_waiting

if TYPE_CHECKING:
    from state.eventlog import EventLog

    from .app import App


def summarize(app: App) -> dict[str, Any]:
    """What `facesetd status` shows: counts, every faceset, the pool and how close its people are to the gate."""
    app.ensure_folders()  # as opening the pipeline did: a status leaves the data folder as a reconcile lays it out
    st = CorpusState(app.events)
    st.catch_up()
    listed = facesets_listed(st)
    areas = {area: sum(1 for r in listed if r.area == area) for area in AREAS}
    images = st.image_counts()
    inbox = app.config.inbox_dir
    deferred = st.deferred_photos()
    left = [p for p in st.left_photos() if p.root == "inbox"]
    kept = {p.path for p in left}
    return {
        "inbox": {
            # photos in the inbox not yet received (the daemon takes them one at a time), and those deferred
            # because they do not decode yet (their writer may not be done)
            "waiting": sum(1 for rel in list_waiting(inbox) if names.escape(rel) not in kept) if inbox.is_dir() else 0,
            "deferred": [names.escape(d.path) for d in deferred if d.reason != "blocked"],
            # photos held back while a folder they would be moved into is not a folder, and which folder
            "blocked": [names.escape(d.path) for d in deferred if d.reason == "blocked"],
            "blocked_by": blocked_folder(inbox, app.config.corpus_dir),
            # photos handled but still where they were received: their folder does not let facesetd move them
            "left": [{"path": names.escape(p.path), "why": p.left} for p in left],
        },
        "facesets": {AREA_NAMES[area]: count for area, count in areas.items()},
        "images": {"active": int(images[0]), "dropped": int(images[1])},
        "log_position": st.log.head(),
        "pending": pending_work(st),
        "corpus": str(app.config.corpus_dir),
        "faceset_list": faceset_list(st, app.config.projection.top_n, listed),
        "pool": pool_summary(app, st),
        "candidates": candidate_list(st),
        "dead_letters": dead_letter_list(st.log),
    }


def dead_letter_list(log_: EventLog) -> list[dict[str, Any]]:
    """Inputs the error boundary set aside and not retried yet (daemon/dead_letters.py), oldest first."""
    from .dead_letters import open_dead_letters

    return [{"id": d.position, "follower": d.event.follower, "step": d.event.step, "path": d.event.path,
             "dest": d.event.dest, "error": d.event.error, "line": d.line()} for d in open_dead_letters(log_)]


def pending_work(state: CorpusState) -> dict[str, int]:
    """Recorded work not done yet: events the checks have not handled, decided moves not made, projections to
    write again."""
    return {
        "events_unhandled": unhandled(state.log),
        "moves_pending": len(state.pending_decisions()),
        "projections_dirty": len(state.dirty()),
    }


def candidate_list(state: CorpusState) -> list[dict[str, Any]]:
    """The pool faces proposed for a faceset, waiting for a person (handlers/candidates.py)."""
    return [{"face_id": c.face_id, "path": c.path, "faceset": c.faceset, "distance": round(c.distance, 4),
             "event": c.position} for c in state.candidates()]


def facesets_listed(state: CorpusState) -> list[FacesetCount]:
    """The facesets `status` lists, as the master manifest does: all but the empty husks an undo leaves out of
    the active ones (CorpusState.emptied_facesets; their folders stay on disk)."""
    emptied = state.emptied_facesets()
    return [r for r in state.faceset_summaries() if r.name not in emptied]


def faceset_list(state: CorpusState, top_n: int, rows: list[FacesetCount] | None = None) -> list[dict[str, Any]]:
    """Every faceset by name (`rows`, default facesets_listed): its area ("active", "_masked", "_merged" or
    "_thin", as in its manifest), its faces (kept and dropped) and how many of them its top-N .fsz holds."""
    rows = facesets_listed(state) if rows is None else rows
    labels = state.labels()
    return [{"name": n, "area": a or "active", "faces": int(kept), "dropped": int(dropped), "top_n": top_n,
             "in_top_n": min(top_n, int(kept)), "label": labels.get(n, "")} for n, a, kept, dropped in rows]


def pool_summary(app: App, state: CorpusState) -> dict[str, Any]:
    """The pool, read from its clusters beside the log (daemon/pool_follow.py pool_summary: status never clusters).
    An empty pool needs none of it: no clustering code is imported for it."""
    if state.pool_size():
        from .pool_follow import pool_summary as from_the_projection

        return from_the_projection(app.pipeline)
    identity = app.config.identity
    return {"faces": 0, "photos": 0, "close_to_gate": 0, "close_sizes": [], "min_new_faceset": max(1, identity.min_new_faceset),
            "cluster_distance": identity.cluster_distance, "forming": [],
            "projection": {"stored": False, "position": 0, "behind": 0}}
