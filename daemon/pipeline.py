"""The corpus pipeline: log -> corpus state -> moves -> handlers -> file projections.

`settle()` runs every processor until nothing is left to do; `reconcile()` first compares the disk
with the log. The daemon and the one-shot `facesetd reconcile` share this, so both give the same corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

import handlers  # noqa: F401  (registers every check)
from gpu_agent.interface import FaceEngine, OcclusionScorer
from handlers.common import open_models
from handlers.context import HandlerContext
from handlers.dispatch import Dispatcher
from handlers.pool import cluster_pool
from state import events as ev
from state.atomic import sweep_temp_files
from state.corpus_state import MASTER_DIRTY, CorpusState
from state.errors import UnknownEvent
from state.eventlog import EventLog
from state.layout import POOL_DIR, faceset_dir, parse_face_path
from state.mover import Mover
from state.render import Renderer
from state.scan import ScanResult, scan_corpus

from .config import Config
from .inbox import scan_inbox

log = structlog.get_logger("facesetd.pipeline")


@dataclass
class ReconcileReport:
    scanned: int = 0
    hashed: int = 0
    appended: dict[str, int] = field(default_factory=dict)
    adopted: bool = False
    dry_run: bool = False
    handled: int = 0  # events the checks then handled (the scan's and those they led to)
    promoted: int = 0  # new facesets from the pool
    planned: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "hashed": self.hashed,
            "events": dict(sorted(self.appended.items())),
            "handled": self.handled,
            "promoted": self.promoted,
            "adopted": self.adopted,
            "dry_run": self.dry_run,
        }


class Pipeline:
    def __init__(
        self,
        config: Config,
        events: EventLog,
        open_engines: Callable[[], tuple[FaceEngine, OcclusionScorer]] | None = None,
    ) -> None:
        self.config = config
        self.log = events
        self.state = CorpusState(events)
        self.mover = Mover(events, self.state, config.corpus_dir)
        self.renderer = Renderer(self.state, config.corpus_dir, config.projection.top_n)
        self.ctx = HandlerContext(
            state=self.state, corpus=config.corpus_dir, inbox=config.inbox_dir,
            thresholds=config.thresholds, identity=config.identity, top_n=config.projection.top_n,
            open_engines=open_engines, staging=config.staging_dir, eras=config.eras,
            model_retry_s=config.queue.model_retry_s,
        )
        self.dispatcher = Dispatcher(events, self.state, self.ctx)
        # Extra scanners (e.g. the inbox) contribute events to reconcile: fn(pipeline) -> list[Event].
        self.scanners: list[Callable[["Pipeline"], list[ev.Event]]] = []
        # The inbox needs the face models: without them photos stay where they are.
        if open_engines is not None:
            self.scanners.append(scan_inbox)

    # Processing ------------------------------------------------------------------------------------
    def settle(self, *, render: bool = True, progress: Callable[[int], None] | None = None) -> int:
        """Run state, moves, handlers and projections until all are caught up with the log; returns how
        many events the handlers consumed."""
        total = 0
        while True:
            self.state.catch_up()
            moved = self.mover.finish_pending()
            handled = self.dispatcher.run_pending()
            total += handled
            if progress and handled:
                progress(handled)
            if not moved and not handled and not self.state.pending_decisions():
                break
        if render:
            self.renderer.render_dirty()
        return total

    def pending_work(self) -> dict[str, int]:
        return {
            "events_unhandled": self.dispatcher.pending(),
            "moves_pending": len(self.state.pending_decisions()),
            "projections_dirty": len(self.state.dirty()),
        }

    # Reconcile -------------------------------------------------------------------------------------
    def scan(self) -> ScanResult:
        self.state.catch_up()
        corpus = self.config.corpus_dir
        adopt = self.log.head() == 0
        known_facesets = {n for n, _a in self.state.facesets()}
        result = scan_corpus(corpus, self.state.files(), known_facesets, adopt=adopt)
        for scanner in self.scanners:
            result.events.extend(scanner(self))
        return result

    def reconcile(self, *, dry_run: bool = False, progress: Callable[[int], None] | None = None) -> ReconcileReport:
        # Finish what a crash interrupted before looking at the disk: pending moves would otherwise
        # look like files that moved by hand.
        if not dry_run:
            self.state.catch_up()
            self.mover.finish_pending()
            self.sweep_interrupted_writes()
        result = self.scan()
        if not dry_run:
            result.apply_renames(self.config.corpus_dir)  # names that are not UTF-8, before their events
            for rel in result.leftovers:  # a crop or PNG write cut short by a crash
                (self.config.corpus_dir / rel).unlink(missing_ok=True)
        report = ReconcileReport(
            scanned=result.files_seen, hashed=result.hashed, appended=result.count(), dry_run=dry_run,
            adopted=any(isinstance(e, ev.CorpusAdopted) for e in result.events),
        )
        if dry_run:
            report.planned = [{"kind": e.KIND, "subject": e.subject} for e in result.events]
            return report
        if result.events:
            self.log.append(result.events)
        report.handled = self.settle(progress=progress)
        if self.request_missing_analyses():
            report.handled += self.settle(progress=progress)
        report.promoted = self.promote_pool()
        return report

    def request_missing_analyses(self) -> int:
        """Ask again for the analysis of active faces that have none (added while no face model could be
        opened). Only when the models open and nothing is in flight, so each request is answered."""
        if self.dispatcher.pending() or open_models(self.ctx, "embed") is None:
            return 0
        rows = self.state.query(
            "SELECT f.path, f.sha256 FROM faces f JOIN facesets s ON s.name = f.faceset"
            " WHERE s.area = '' AND f.dropped = 0 AND f.analyzed IS NULL"
            " AND json_extract(f.scores, '$.face_count') IS NULL ORDER BY f.path"
        )
        if rows:
            self.log.append([ev.AnalysisRequested(path=p, sha256=h, reason="no analysis yet (models were not available)")
                             for p, h in rows])
        return len(rows)

    def sweep_interrupted_writes(self) -> None:
        """Remove temp files a crash left mid-write. Only a render can leave them, and a crashed render
        leaves its facesets marked dirty, so only those folders (and the corpus root) are looked at."""
        corpus = self.config.corpus_dir
        dirty = [d for d in self.state.dirty() if d != MASTER_DIRTY]
        if not corpus.exists():
            return
        folders = [corpus, corpus / POOL_DIR]
        folders += [corpus / faceset_dir(self.state.faceset_area(n) or "", n) for n in dirty]
        for folder in folders:
            if folder.is_dir():
                sweep_temp_files(folder, recursive=False)

    def promote_pool(self) -> int:
        """New facesets from pool clusters past the refine gate (reconcile's last pass; the scheduler's job)."""
        promoted = cluster_pool(self.ctx)
        if promoted:
            self.log.append(promoted)
            self.settle()
        return sum(isinstance(e, ev.FacesetPromoted) for e in promoted)

    def rebuild(self) -> None:
        """Regenerate every projection from the log alone."""
        self.state.reset()
        self.state.catch_up()
        self.renderer.render_all()

    # Restore ---------------------------------------------------------------------------------------
    def restore(self, position: int) -> int:
        """Undo decision `position` (a prune or a quarantine); returns the new event's position."""
        self.state.catch_up()
        stored = self.log.get(position)
        if stored is None:
            raise UnknownEvent(f"no event {position} in the log")
        target = stored.event
        if not isinstance(target, (ev.FacePruned, ev.FacesetQuarantined)):
            raise UnknownEvent(f"event {position} is a {target.KIND}; only prunes and quarantines can be restored")
        row = self.state.query("SELECT state FROM decisions WHERE position=?", (position,))
        if row and row[0][0] == "reverted":
            raise UnknownEvent(f"event {position} was already restored")
        self.mover.finish_pending()
        if isinstance(target, ev.FacePruned):
            found = self.state.query("SELECT path FROM faces WHERE pruned_by=?", (position,))
            if not found:
                raise UnknownEvent(f"the face pruned by event {position} is no longer in _dropped/")
            current = found[0][0]
            fp = parse_face_path(current)
            assert fp is not None and fp.dropped
            # Back under the name it had (its _dropped/ name may carry a ~2 suffix when that name was taken).
            original = parse_face_path(target.moves[0][0]) if target.moves else None
            dest = f"{faceset_dir(fp.area, fp.faceset)}/faces/{original.name if original else fp.name}"
            if (self.config.corpus_dir / dest).exists():
                raise UnknownEvent(f"cannot restore: {dest} is taken by another file")
            moves: tuple[tuple[str, str], ...] = ((current, dest),)
            subject = dest
        else:
            name = target.faceset
            area = self.state.faceset_area(name) or ""
            if not area:
                raise UnknownEvent(f"{name} is already active")
            if (self.config.corpus_dir / name).exists():
                raise UnknownEvent(f"cannot restore: {name}/ exists among the active facesets")
            moves = ((faceset_dir(area, name), name),)
            subject = name
        reverted = ev.DecisionReverted(
            target=position, path=subject, moves=moves, check=target.check,
            reason=f"restored by the user (undoes event {position}: {target.reason})",
        )
        (new_pos,) = self.log.append([reverted])
        self.settle()
        return new_pos


def summarize(pipeline: Pipeline) -> dict[str, Any]:
    """Counts for `facesetd status`."""
    st = pipeline.state
    st.catch_up()
    areas = {a: n for a, n in st.query("SELECT area, COUNT(*) FROM facesets GROUP BY area")}
    images = st.query("SELECT COALESCE(SUM(1 - dropped), 0), COALESCE(SUM(dropped), 0) FROM faces")[0]
    return {
        "facesets": {
            "active": areas.get("", 0), "masked": areas.get("_masked", 0),
            "merged": areas.get("_merged", 0), "thin": areas.get("_thin", 0),
        },
        "images": {"active": int(images[0]), "dropped": int(images[1])},
        "log_position": pipeline.log.head(),
        "pending": pipeline.pending_work(),
        "corpus": str(pipeline.config.corpus_dir),
    }
