"""`facesetd reconcile --dry-run`: what a reconcile would record, worked out on a throw-away copy of the log.

The checks run for real (models included), but against a temporary copy of the SQLite event log made with the
backup API, so their decisions are recorded there and nowhere else. The real folder is only read: the real log
is opened read-only, the scan renames nothing, the moves are pretended (recorded as done, nothing moves), no
manifest or .fsz is rendered, and no inbox photo is taken in (the waiting ones are listed instead).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from handlers.registry import without_consumers
from state import events as ev
from state.eventlog import EventLog, copy_log
from state.mover import Mover

from .config import Config
from .inbox import list_waiting
from .pipeline import Pipeline, ReconcileReport

# Decisions and findings worth showing in a preview (the bookkeeping events are left out).
SHOWN = (
    ev.FacePruned.KIND, ev.FacesetQuarantined.KIND, ev.FacesetPromoted.KIND, ev.PoolFacesMatched.KIND,
    ev.FaceSlotted.KIND, ev.FaceUnslotted.KIND, ev.ThinErasListed.KIND, ev.AnalysisRequested.KIND,
    ev.MoveFailed.KIND,
    ev.FacesetReturned.KIND,
    ev.FacesetsMerged.KIND,
)


class PretendMover(Mover):
    """Records every pending decision's moves as done without touching a file (the copy's state then
    believes them, so later checks see the corpus as it would be)."""

    def finish_pending(self) -> int:
        """Mark every pending decision done; returns how many."""
        pending = self.state.pending_decisions()
        for position, _moves in pending:
            self.log.append([ev.MoveCompleted(decision=position)])
            self.state.catch_up()
        return len(pending)


def dry_run_reconcile(config: Config, open_engines: Callable[[], Any] | None,
                      progress: Callable[[int, int], None] | None = None) -> ReconcileReport:
    """The report of a reconcile that changes nothing: `planned` lists the scan's events, the checks' decisions
    (with their reasons) and the inbox photos that would be received, in that order."""
    with tempfile.TemporaryDirectory(prefix="facesetd-dry-run-") as tmp:
        copy = Path(tmp) / "events.sqlite3"
        copy_log(config.log_path, copy)
        log = EventLog(copy)
        try:
            pipeline = Pipeline(config, log, open_engines=open_engines)
            pipeline.mover = PretendMover(log, pipeline.state, config.corpus_dir)
            pipeline.takes_photos = False
            # Without the inbox router: a photo received but not yet routed (a daemon at work, or a crash) would
            # have its crops written and the photo moved.
            pipeline.dispatcher.flow = without_consumers(pipeline.dispatcher.flow, ev.PhotoReceived)
            report = _scan_and_check(pipeline, progress)
        finally:
            log.close()
    waiting = list_waiting(config.inbox_dir) if config.inbox_dir.is_dir() and open_engines is not None else []
    report.planned += [{"kind": ev.PhotoReceived.KIND, "subject": rel, "reason": "waiting in the inbox",
                        "stage": "inbox"}
                       for rel in waiting]
    if waiting:
        report.appended[ev.PhotoReceived.KIND] = len(waiting)
    report.received = len(waiting)
    return report


def _scan_and_check(pipeline: Pipeline, progress: Callable[[int, int], None] | None) -> ReconcileReport:
    """Scan (renaming nothing), record the scan on the copy, settle it without rendering; report both."""
    pipeline.state.catch_up()
    pipeline.mover.finish_pending()
    result = pipeline.scan()
    report = ReconcileReport.of_scan(result, dry_run=True)
    report.planned = [{"kind": e.KIND, "subject": e.subject, "reason": "", "stage": "scan"} for e in result.events]
    start = pipeline.log.append(result.events)[-1] if result.events else pipeline.log.head()
    promoted_before = pipeline.promoted
    report.handled = pipeline.settle(render=False, progress=progress)
    if pipeline.request_missing_analyses():
        report.handled += pipeline.settle(render=False, progress=progress)
    report.promoted = pipeline.promoted - promoted_before
    report.merged = pipeline.merge_duplicates(progress, render=False)
    for se in pipeline.log.read(start, kinds=SHOWN):
        reason = getattr(se.event, "reason", "") or getattr(se.event, "error", "")
        report.planned.append({"kind": se.kind, "subject": se.event.subject, "reason": reason, "stage": "check"})
        report.appended[se.kind] = report.appended.get(se.kind, 0) + 1
    return report
