"""The resident process: watch, queue, process, project; talk to systemd; stop cleanly.

One main loop owns the pipeline (SQLite state, moves, handlers, projections). Watcher threads and
scheduled jobs only put work on a bounded queue (back-pressure: a full queue blocks the watcher),
or append events to the log, which is safe from any thread. SIGTERM lets the current batch finish
(each batch is one transaction) and exits 0; SIGHUP reloads the configuration.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from datetime import timezone
from pathlib import Path
from typing import Any, Callable

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from gpu_agent.errors import ModelsUnavailable
from state.eventlog import BusyBackoff, LogBusy

from .corpus_watch import corpus_events
from .inbox import receive
from .notify import Notifier, watchdog_interval
from .watcher import FileDeleted, FileMoved, FileReady, Watcher, WatchEvent

log = structlog.get_logger("facesetd.daemon")

TICK_S = 0.2  # the main loop's longest sleep: bounds watchdog pings, signal handling and latency
STATUS_EVERY_S = 5.0  # how often STATUS= is sent to systemd
BATCH_EVENTS = 32  # handler events per step, so a stop request waits for at most one batch


class Daemon:
    def __init__(self, app: Any, environ: dict[str, str] | None = None) -> None:
        self.app = app
        self.config = app.config
        self.pipeline = app.pipeline
        self.notifier = Notifier(environ)
        self.watchdog_s = watchdog_interval(environ)
        self.work: queue.Queue[WatchEvent | Callable[[], None]] = queue.Queue(maxsize=self.config.queue.max_pending)
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.watcher: Watcher | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.immich: Any = None
        self.counts = {"watch_events": 0, "appended": 0, "handled": 0}
        self._last_render = 0.0
        self._last_status = 0.0
        self._last_ping = 0.0
        self._models_retry_at = 0.0  # while the models cannot be opened: when to try again
        self.busy = BusyBackoff()  # while another process holds the log's write lock: log once, back off
        self._unrecorded: list[WatchEvent] = []  # drained, but the log was busy: recorded on the next turn

    # Signals -------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    # Start and stop --------------------------------------------------------------------------------
    def start(self) -> None:
        self.app.ensure_folders()
        try:
            report = self.pipeline.reconcile()  # what changed while we were down
            log.info("startup reconcile done", **report.as_dict())
        except ModelsUnavailable as e:  # recorded, not yet handled: the loop tries again later
            self._models_unavailable(e)
        self.watcher = Watcher.from_settings(
            [self.config.corpus_dir, self.config.inbox_dir], self._on_watch_event, self.config.watch
        )
        self.watcher.start()
        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        self.scheduler.add_job(
            lambda: self._submit(self._periodic), "interval", seconds=self.config.queue.cluster_interval_s,
            id="cluster_pool", max_instances=1, coalesce=True, replace_existing=True,
        )
        self._start_immich()
        self.scheduler.start()
        self.notifier.ready()
        log.info("facesetd running", corpus=str(self.config.corpus_dir), inbox=str(self.config.inbox_dir),
                 watch="polling" if self.watcher.polling else "inotify", watchdog_s=self.watchdog_s)

    def _periodic(self) -> None:
        """The scheduled pass: promote pool clusters, and ask again for analyses missed while no model was up."""
        if self._models_down():
            return
        self.pipeline.promote_pool()
        self.pipeline.request_missing_analyses()

    def _models_down(self) -> bool:
        return time.monotonic() < self._models_retry_at

    def _start_immich(self) -> None:
        if not (self.config.immich.url and self.config.immich.users):
            return
        from .immich.scheduler import ImmichScheduler

        self.immich = ImmichScheduler(self.config.immich, self.app.import_store(), self.config.staging_dir,
                                      scheduler=self.scheduler)

    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping", queued=self.work.qsize())
        if self.watcher is not None:
            self.watcher.stop()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.immich is not None:
            self.immich.shutdown(wait=False)
        # What is still queued was only observed, not recorded: the next start's reconcile finds it.
        try:
            self.pipeline.renderer.render_dirty()
        except LogBusy as e:  # the marks stay in the log's state: the next start renders them
            log.warning("projections not rendered at stop: the event log is busy", error=str(e))
        log.info("facesetd stopped", **self.counts)

    # Feeding the loop -------------------------------------------------------------------------------
    def _on_watch_event(self, event: WatchEvent) -> None:
        while not self.stop_requested.is_set():
            try:
                self.work.put(event, timeout=0.5)  # blocks the watcher while the queue is full
                return
            except queue.Full:
                continue

    def _submit(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the main loop (scheduled jobs must not touch the pipeline from their thread)."""
        self._on_watch_event(fn)  # type: ignore[arg-type]

    # The loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        self.start()
        try:
            while not self.stop_requested.is_set():
                self.step()
        finally:
            self.shutdown()
        return 0

    def step(self) -> None:
        """One turn (see _turn); while another process holds the log's write lock, back off and keep pinging."""
        if self.busy.waiting():
            self.stop_requested.wait(TICK_S)
        else:
            try:
                self._turn()
            except LogBusy as e:  # nothing was written; every step is safe to try again
                self.busy.failed(e)
            else:
                self.busy.succeeded()
        if self.reload_requested.is_set():
            self._reload()
        self._keepalive(time.monotonic())

    def _turn(self) -> None:
        """Take queued work, record it, handle one batch, render if due."""
        idle = self.pipeline.dispatcher.pending() == 0 or self._models_down()
        self._drain(timeout=TICK_S if idle else 0.0)
        self.pipeline.state.catch_up()
        self.pipeline.mover.finish_pending()
        handled = 0
        if not self._models_down():
            try:
                handled = self.pipeline.dispatcher.run_pending(max_events=BATCH_EVENTS)
            except ModelsUnavailable as e:  # the event stays unhandled; nothing is lost, it is tried again later
                self._models_unavailable(e)
            else:
                if self._models_retry_at:
                    self._models_retry_at = 0.0
                    log.info("models available again; handling the waiting events")
                    self.pipeline.request_missing_analyses()
        self.counts["handled"] += handled
        now = time.monotonic()
        # Coalescing: a faceset's projections are rewritten at most once per coalesce_s, however many
        # of its images arrive in that time; the first change after a quiet spell is written at once.
        if now - self._last_render >= self.config.projection.coalesce_s:
            if self.pipeline.renderer.render_dirty():
                self._last_render = now

    def _models_unavailable(self, error: Exception) -> None:
        if not self._models_retry_at:
            log.error("models unavailable: new photos and faces are recorded and wait", error=str(error),
                      retry_s=self.config.queue.model_retry_s)
        self._models_retry_at = time.monotonic() + self.config.queue.model_retry_s

    def _drain(self, timeout: float) -> None:
        batch, self._unrecorded = self._unrecorded, []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.work.get(timeout=max(0.0, deadline - time.monotonic())) if not batch else self.work.get_nowait()
            except queue.Empty:
                break
            if callable(item) and not isinstance(item, (FileReady, FileMoved, FileDeleted)):
                try:
                    item()
                except LogBusy:  # the scheduled job runs again at its next interval; keep what was drained
                    self._unrecorded = batch
                    raise
                continue
            batch.append(item)
            if len(batch) >= self.config.queue.max_pending:
                break
        if batch:
            self.counts["watch_events"] += len(batch)
            self._record(batch)

    def _record(self, batch: list[WatchEvent]) -> None:
        corpus, inbox = self.config.corpus_dir.resolve(), self.config.inbox_dir.resolve()
        in_corpus = [w for w in batch if _under(w, corpus)]
        in_inbox = [w for w in batch if _under(w, inbox) and isinstance(w, FileReady)]
        try:
            events = corpus_events(self.pipeline.state, corpus, in_corpus) if in_corpus else []
            if events:
                self.pipeline.log.append(events)
                self.counts["appended"] += len(events)
        except LogBusy:
            self._unrecorded = batch  # nothing of it was recorded: all of it again next turn
            raise
        for i, w in enumerate(in_inbox):
            try:
                if receive(self.pipeline, w.path) is not None:
                    self.counts["appended"] += 1
            except LogBusy:
                self._unrecorded = in_inbox[i:]  # the corpus part and the photos before this one are recorded
                raise

    def _reload(self) -> None:
        self.reload_requested.clear()
        self.notifier.reloading()
        try:
            config = self.app.reload_config()
        except Exception as e:  # a bad edit must not take the daemon down: keep the old config
            log.error("config reload failed; keeping the running config", error=str(e))
        else:
            self.app.configure_logging()
            # What can change in place: thresholds, identity routing, projection and queue settings.
            # Folders, watching and models are fixed for the life of the process (restart for those).
            self.config = self.pipeline.config = config
            ctx = self.pipeline.ctx
            ctx.thresholds, ctx.identity, ctx.top_n = config.thresholds, config.identity, config.projection.top_n
            self.pipeline.renderer.top_n = config.projection.top_n
            log.info("config reloaded")
        self.notifier.ready()

    def _keepalive(self, now: float) -> None:
        if self.watchdog_s is not None and now - self._last_ping >= self.watchdog_s:
            if self.watcher is None or self.watcher.is_alive():  # a dead watcher must get us restarted
                self.notifier.watchdog()
            self._last_ping = now
        if now - self._last_status >= STATUS_EVERY_S:
            pending = self.pipeline.pending_work()
            self.notifier.status(
                f"queue {self.work.qsize()}, unhandled {pending['events_unhandled']}, "
                f"handled {self.counts['handled']}, appended {self.counts['appended']}"
            )
            self._last_status = now


def _under(w: WatchEvent, root: Path) -> bool:
    path = w.dest if isinstance(w, FileMoved) else w.path
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False

