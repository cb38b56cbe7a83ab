"""The corpus pipeline: log -> corpus state -> moves -> handlers -> pool promotion -> file projections.

Every follower of the log is run by the one runner (daemon/runner.py): the daemon drives it a turn at a time,
`settle()` and `reconcile()` until nothing is left; `reconcile()` first compares the disk with the log. The daemon
and the one-shot `facesetd reconcile` differ only in that driver, so both give the same corpus.

Photos are taken from the inbox one at a time, and each is settled (routed, its faces checked, their moves done,
the pool promotion evaluated) before the next is received. So where a photo's faces go depends only on the photos
received before it, in the order the log holds them, never on batch sizes, timers or when the daemon restarted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gpu_agent.interface import FaceEngine, OcclusionScorer
from handlers.common import open_models
from handlers.context import HandlerConfig, HandlerContext, Models
from handlers.dispatch import Dispatcher
from handlers.pool import cluster_pool, pool_clusters
from handlers.pool_clusters import PoolClusters
from handlers.video_frames import is_video
from state import events as ev
from state.atomic import sweep_temp_files
from state.corpus_state import MASTER_DIRTY, CorpusState
from state.errors import UnknownEvent
from state.eventlog import EventLog
from state.layout import POOL_DIR, faceset_dir, parse_face_path
from state.mover import Mover
from state.processor import commit
from state.render import Renderer
from state.scan import ScanResult, scan_corpus

from .config import Config
from .inbox import list_waiting, receive
from .pool_follow import pool_behind, rebuild_pool
from .runner import Runner
from .summary import pending_work

log = structlog.get_logger("facesetd.pipeline")

PROMOTER = "promoter"  # the pool promotion's position in the log's tracking table
# The merge check's position in the log's tracking table, one per merge_distance (a new distance looks at every
# faceset once): "merger:0.55".
MERGER = "merger"
# Event kinds after which the pool promotion is evaluated again (once what they led to is settled).
PROMOTION_TRIGGERS = (ev.PhotoProcessed.KIND, ev.FacesetCreated.KIND, ev.DecisionReverted.KIND)


@dataclass
class ReconcileReport:
    scanned: int = 0
    hashed: int = 0
    appended: dict[str, int] = field(default_factory=dict)
    adopted: bool = False
    dry_run: bool = False
    handled: int = 0  # events the checks then handled (the scan's and those they led to)
    promoted: int = 0  # new facesets from the pool
    received: int = 0  # inbox photos taken in
    planned: list[dict[str, Any]] = field(default_factory=list)
    merged: int = 0  # facesets merged into another (duplicate identities)

    @classmethod
    def of_scan(cls, result: ScanResult, *, dry_run: bool = False) -> ReconcileReport:
        """The report's first half: what the scan of the corpus found."""
        return cls(scanned=result.files_seen, hashed=result.hashed, appended=result.count(), dry_run=dry_run,
                   adopted=any(isinstance(e, ev.CorpusAdopted) for e in result.events))

    def as_dict(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "hashed": self.hashed,
            "events": dict(sorted(self.appended.items())),
            "handled": self.handled,
            "promoted": self.promoted,
            "merged": self.merged,
            "received": self.received,
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
        self.ctx = HandlerContext(config=handler_config(config), state=self.state, models=Models(open_engines))
        self.dispatcher = Dispatcher(events, self.state, self.ctx)
        # The inbox needs the face models: without them photos stay where they are.
        self.takes_photos = open_engines is not None
        self.promoted = 0  # facesets promoted from the pool by this process (for reports)
        self.handled = 0  # events the handlers consumed in this process
        self.pool: PoolClusters | None = None  # the pool's clusters, kept between passes (loaded when first due)
        self._slices: list[float] = []  # seconds of each slice of the pool pass under way

    def apply_config(self, config: Config) -> None:
        """A reloaded configuration (SIGHUP): the handlers' tunables and the renderer's top-N take it at once.
        Folders, models and the engines already open stay (they are restart-only keys)."""
        self.config = config
        self.ctx.config = handler_config(config)
        self.ctx.begin_batch()  # nothing cached under the old values (e.g. the era buckets)
        self.renderer = Renderer(self.state, config.corpus_dir, config.projection.top_n)

    # Processing ------------------------------------------------------------------------------------
    def runner(self, *, render: bool = True) -> Runner:
        """A runner of every follower (daemon/runner.py) for a one-shot: it renders once settled (or never)."""
        return Runner(self, render_every_s=None if render else float("inf"))

    def tracking_name(self, follower: str) -> str:
        """The log's tracking name of a tracked follower that evaluates rather than consumes (promoter, merger)."""
        return {"promoter": PROMOTER, "merger": self._merger()}[follower]

    def takes_photo(self) -> bool:
        """Whether the next inbox photo may be received now: the events of the photos before it are handled and
        their moves done, and the pool promotion they made due is evaluated. A long clustering pass (a big pool's
        first after a start, run in slices) does not hold photos back: one received meanwhile is routed at once,
        and its pool faces join the pass when the search under way is done."""
        return self._settled() and (not self.promotion_due() or (self.pool is not None and self.pool.searching))

    def idle(self) -> bool:
        """Nothing recorded is waiting: every event handled, every move done, the promotion evaluated, the pool's
        clusters written beside the log."""
        return self._settled() and not self.promotion_due() and not pool_behind(self)

    def _settled(self) -> bool:
        """Every event handled and every decided move done."""
        return self.dispatcher.pending() == 0 and not self.state.pending_decisions()

    def settle(self, *, render: bool = True, progress: Callable[[int, int], None] | None = None) -> int:
        """Run every follower until all are caught up with the log (daemon/runner.py); returns how many events the
        checks consumed. `progress` gets (events just handled, events still unhandled in the log) as they go."""
        return self.runner(render=render).run_until_idle(progress=progress)

    def receive_next(self, waiting: list[str]) -> int | None:
        """Record the first photo of `waiting` (inbox-relative paths, in order) that is still there and new;
        removes what it looked at from the list. Returns the event position, or None when none was recorded.
        The router is told what is left (in order): it may analyse some of them with this one."""
        inbox = self.config.inbox_dir
        while waiting:
            rel = waiting.pop(0)
            position = receive(self, inbox / rel)
            if position is not None:
                # videos are not looked at ahead: they are streamed, never read whole (handlers/route_video.py)
                self.ctx.ahead.upcoming([inbox / r for r in waiting if not is_video(r)])
                return position
        self.ctx.ahead.upcoming([])
        return None

    def pending_work(self) -> dict[str, int]:
        return pending_work(self.state)

    # Reconcile -------------------------------------------------------------------------------------
    def scan(self) -> ScanResult:
        self.state.catch_up()
        corpus = self.config.corpus_dir
        adopt = self.log.head() == 0
        known_facesets = {n for n, _a in self.state.facesets()}
        return scan_corpus(corpus, self.state.files(), known_facesets, adopt=adopt)

    def waiting_photos(self) -> list[str]:
        """Inbox photos to take in, in the order they will be received (seeds first); none without models."""
        return list_waiting(self.config.inbox_dir) if self.takes_photos else []

    def scan_and_record(self) -> tuple[ScanResult, ReconcileReport]:
        """Finish what a crash interrupted, compare the corpus on disk with the log and record the difference.
        The first half of a reconcile; the daemon runs it at start, after it signalled readiness."""
        # Pending moves would otherwise look like files that moved by hand.
        self.state.catch_up()
        self.mover.finish_pending()
        self.sweep_interrupted_writes()
        result = self.scan()
        result.apply_renames(self.config.corpus_dir)  # names that are not UTF-8, before their events
        for rel in result.leftovers:  # a crop or PNG write cut short by a crash
            (self.config.corpus_dir / rel).unlink(missing_ok=True)
        report = ReconcileReport.of_scan(result)
        if result.events:
            self.log.append(result.events)
        return result, report

    def reconcile(self, *, progress: Callable[[int, int], None] | None = None,
                  photos: Callable[[int, int], None] | None = None) -> ReconcileReport:
        """Bring the log in line with the disk, then take in every waiting inbox photo, one at a time, settling
        each before the next (as the daemon does). `progress` gets the events handled as they go (settle); `photos`
        gets (inbox photos done, inbox photos waiting at the start), first (0, total) once they are listed.
        (A dry run works on a copy of the log: daemon/dry_run.py.)"""
        promoted_before = self.promoted
        _result, report = self.scan_and_record()
        runner = self.runner()
        report.handled = runner.run_until_idle(progress=progress)
        if self.request_missing_analyses():
            report.handled += runner.run_until_idle(progress=progress)
        runner.waiting = set(self.waiting_photos())
        total = len(runner.waiting)
        if photos:
            photos(0, total)
            runner.on_received = lambda: photos(total - len(runner.waiting), total)
        runner.merge = True  # once the inbox is settled, as the daemon does
        report.handled += runner.run_until_idle(progress=progress)
        if photos and total:
            photos(total, total)  # the last ones looked at may have been known already (nothing received)
        report.received = runner.received
        if report.received:
            report.appended[ev.PhotoReceived.KIND] = report.appended.get(ev.PhotoReceived.KIND, 0) + report.received
        report.promoted = self.promoted - promoted_before
        report.merged = runner.merged
        return report

    def request_missing_analyses(self) -> int:
        """Ask again for the analysis of active faces that have none (added while no face model could be
        opened). Only when the models open and nothing is in flight, so each request is answered."""
        if self.dispatcher.pending() or open_models(self.ctx, "embed") is None:
            return 0
        rows = self.state.faces_without_analysis()
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

    def promotion_due(self) -> bool:
        """Whether a photo was processed (or a faceset created or restored) since the pool promotion last ran.
        Points the log defines, so a replay or a restart evaluates the promotion at the same places."""
        return self.log.has_kinds_since(self.log.tracked(PROMOTER), PROMOTION_TRIGGERS)

    def promote_if_due(self, budget_s: float | None = None) -> int:
        """Promote pool clusters past the refine gate (and match pool faces to new facesets) when due; the
        promotion's events and the promoter's position are recorded in one transaction. Returns events appended.
        With `budget_s`, a long clustering pass (a big pool's first after a start) runs in slices of about that
        long, one per call, and returns 1 until it is complete (work was done: the loop comes back)."""
        after = self.log.tracked(PROMOTER)
        if not self.log.has_kinds_since(after, PROMOTION_TRIGGERS):
            return 0
        self.pool = pool_clusters(self.ctx, self.pool)
        if budget_s is not None:
            started = time.monotonic()
            done = self.pool.advance(budget_s)
            self._slices.append(time.monotonic() - started)
            if not done:
                return 1
            if len(self._slices) > 1:  # a long pass: say what it took, and that photos were not held meanwhile
                log.info("pool clustered", faces=self.pool.size, slices=len(self._slices),
                         busy_s=round(sum(self._slices), 2), longest_slice_s=round(max(self._slices), 3))
            self._slices = []
        seen = self.log.head()  # the state is caught up to here (step() applies the log first)
        events = cluster_pool(self.ctx, self.pool)
        if commit(self.log, PROMOTER, after, events, lambda positions: max([seen, *positions])) is None:
            return 0  # another process evaluated it first
        self.promoted += sum(isinstance(e, ev.FacesetPromoted) for e in events)
        return len(events)

    def promote_pool(self) -> int:
        """Evaluate the promotion now and settle what it decided; returns how many facesets were promoted."""
        before = self.promoted
        self.settle(render=False)
        if self.promote_if_due():
            self.settle()
        return self.promoted - before

    def rebuild(self) -> None:
        """Regenerate every projection from the log alone (the pool's clusters too)."""
        self.renderer.rebuild()
        rebuild_pool(self)

    # Restore ---------------------------------------------------------------------------------------
    def restore(self, position: int) -> int:
        """Undo decision `position` (a prune, a quarantine, or a face taken out of its faceset), or take a routed
        face (FaceRouted, ForcedFaceDistant: a forced join) out of its faceset; returns the new event's position.

        Whether it can is daemon/restore_rules.py's to say (the review pages ask it too): its refusal is this
        one's. The undo code below keeps only the checks that need the pipeline's work."""
        from .restore_rules import refusal

        self.state.catch_up()
        stored = self.log.get(position)
        if stored is None:
            raise UnknownEvent(f"no event {position} in the log")
        self.mover.finish_pending()
        why = refusal(self.state, self.config.corpus_dir, stored)
        if why is not None:
            raise UnknownEvent(why)
        return self._undo(position, stored.event)

    def _undo(self, position: int, target: ev.Event) -> int:
        """The undo of an event restore_rules accepted: record it, settle what it leads to."""
        from handlers.merge_restore import unmerge
        from handlers.thin_return import undo_moves
        from handlers.unroute import unroute

        from .correction_undo import CORRECTION_KINDS, restore_correction

        if isinstance(target, CORRECTION_KINDS):  # corrections, promotions, restores (daemon/correction_undo.py)
            return restore_correction(self, position, target)
        events: list[ev.Event]
        if isinstance(target, ev.FacesetsMerged):  # the prunes it led to, then its moves (the last is its revert)
            events = list(unmerge(self.ctx, position, target))
        elif isinstance(target, (ev.FaceRouted, ev.ForcedFaceDistant)):
            events = [unroute(self.ctx, position, target)]
        elif isinstance(target, ev.FacesetReturned):  # back to _thin/, where the thin rule then leaves it
            events = [self._reverted(position, target, undo_moves(position, target), target.faceset)]
        else:
            assert isinstance(target, (ev.FacePruned, ev.FacesetQuarantined, ev.FaceUnrouted, ev.ErasSplit))
            events = [self._reverted(position, target, *self._undo_moves(position, target))]
        positions = self.log.append(events)
        self.settle()
        return positions[-1]

    @staticmethod
    def _reverted(position: int, target: ev.Decision, moves: tuple[tuple[str, str], ...],
                  subject: str) -> ev.DecisionReverted:
        return ev.DecisionReverted(target=position, path=subject, moves=moves, check=target.check,
                                   reason=f"restored by the user (undoes event {position}: {target.reason})")

    def _undo_moves(self, position: int, target: ev.FacePruned | ev.FacesetQuarantined | ev.FaceUnrouted
                    | ev.ErasSplit) -> tuple[tuple[tuple[str, str], ...], str]:
        """The moves that undo decision `position`, and the path its DecisionReverted names."""
        if isinstance(target, ev.ErasSplit):  # the buckets it made go to _merged/, every face leaves them
            from handlers.era_split import unsplit_moves

            return unsplit_moves(self.ctx, position, target), target.faceset
        if isinstance(target, (ev.FacePruned, ev.FaceUnrouted)):
            current = self.state.face_pruned_by(position)
            fp = parse_face_path(current or "")
            assert current is not None and fp is not None and fp.dropped
            # Back under the name it had (its _dropped/ name may carry a ~2 suffix when that name was taken).
            original = parse_face_path(target.moves[0][0]) if target.moves else None
            dest = f"{faceset_dir(fp.area, fp.faceset)}/faces/{original.name if original else fp.name}"
            return ((current, dest),), dest
        name = target.faceset
        return ((faceset_dir(self.state.faceset_area(name) or "", name), name),), name

    # Merging duplicate identities ------------------------------------------------------------------
    def _merger(self) -> str:
        return f"{MERGER}:{self.ctx.config.identity.merge_distance}"

    def merge_due(self) -> bool:
        """Whether a faceset's centroid may have changed since the merge check last ran (at this merge_distance);
        never while merging is off (merge_distance 0)."""
        if self.ctx.config.identity.merge_distance <= 0:
            return False
        self.state.catch_up()
        return bool(self.state.facesets_changed_after(self.log.tracked(self._merger())))

    def merge_if_due(self) -> int:
        """Look for duplicate identities among the facesets changed since the last check (all of them the first
        time) and record the merges; the check's events and its position in one transaction. Returns how many
        facesets were merged into others. Its moves are carried out, and the moved faces checked, by the loop."""
        from handlers.merge_identities import check_merges

        if self.ctx.config.identity.merge_distance <= 0:  # merging is off
            return 0
        self.state.catch_up()
        merger = self._merger()
        after = self.log.tracked(merger)
        changed = self.state.facesets_changed_after(after)  # what merge_due() asks, kept for the check
        # The moved faces are analysed again, and adopted facesets need the models for their centroids: without
        # models the check waits (it stays due).
        if not changed or not self.ctx.models.configured or open_models(self.ctx, "merge") is None:
            return 0
        seen = self.state.applied_position()
        events = check_merges(self.ctx, None if after == 0 else [c.name for c in changed])
        if commit(self.log, merger, after, events, lambda positions: max([seen, *positions])) is None:
            return 0  # another process checked first
        return sum(len(e.merged) for e in events if isinstance(e, ev.FacesetsMerged))

    def merge_duplicates(self, progress: Callable[[int, int], None] | None = None, *, render: bool = True) -> int:
        """Merge duplicate identities until none are left (a survivor's new centroid may meet another), settling
        each round (moves, the moved faces' checks); returns how many facesets were merged into others."""
        runner = self.runner(render=render)
        runner.merge = True
        runner.run_until_idle(progress=progress)
        return runner.merged


def handler_config(config: Config) -> HandlerConfig:
    """What the handlers read of the configuration (folders are restart-only; the tunables apply on reload)."""
    return HandlerConfig(corpus=config.corpus_dir, inbox=config.inbox_dir, staging=config.staging_dir,
                         thresholds=config.thresholds, identity=config.identity, eras=config.eras,
                         limits=config.limits, video=config.video, model_retry_s=config.queue.model_retry_s,
                         analysis_batch=config.models.batch_size)
