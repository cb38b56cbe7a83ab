"""The resident process: watch, queue, process, project; talk to systemd; stop cleanly.

One main loop owns the pipeline (SQLite state, moves, handlers, projections). Watcher threads and
scheduled jobs only put work on a bounded queue (back-pressure: a full queue blocks the watcher),
or append events to the log, which is safe from any thread.

Start-up: the watchers start first (nothing dropped meanwhile is missed), then READY=1 is sent at once;
the start-up reconcile (corpus scan, inbox listing) and any backlog are ordinary work of the loop, so
WATCHDOG=1 keeps coming and a stop request is honoured between two steps. Inbox photos are received one
at a time, each once the previous one is settled (see daemon/pipeline.py). SIGTERM finishes the current
step (one photo, or one group of checks) and exits 0; SIGHUP reloads the configuration.
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from state.errors import EXIT_LOG_DAMAGED, LogDamaged
from state.eventlog import BusyBackoff, LogBusy

from .corpus_watch import corpus_events
from .deferred import retry_due
from .inbox import is_candidate, still_written
from .log_checks import LogChecks
from .notify import Notifier, watchdog_interval
from .runner import Runner
from .watcher import FileDeleted, FileMoved, FileReady, Watcher, WatchEvent

log = structlog.get_logger("facesetd.daemon")

TICK_S = 0.2  # the main loop's longest sleep: bounds watchdog pings, signal handling and latency
STATUS_EVERY_S = 5.0  # how often STATUS= is sent to systemd
DEFERRED_EVERY_S = 2.0  # how often photos that did not decode yet are looked at again (daemon.deferred)
BATCH_EVENTS = 8  # handler events per step at most, so a stop request waits for one photo or one group of checks


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
        self.review: Any = None  # the review pages' server (daemon/review), when [review] enabled
        self.control: Any = None  # the control socket the shell's corrections come through (daemon/control.py)
        self.counts = {"watch_events": 0, "appended": 0, "handled": 0}
        # Every follower of the log, behind the one error boundary; renders every [projection] coalesce_s.
        self.runner = Runner(self.pipeline, render_every_s=self.config.projection.coalesce_s, hold_on_models=True)
        self.runner.merge = True
        self._last_status = 0.0
        self._last_ping = 0.0
        self._last_deferred = 0.0
        self._last_done = 0  # what the runner's last turn did (0: wait for watch events before the next)
        self._started = False  # the start-up reconcile ran
        self._caught_up_at: int | None = None  # the log head when "caught up" was last said (None: busy since)
        self.busy = BusyBackoff()  # while another process holds the log's write lock: log once, back off
        self._unrecorded: list[WatchEvent] = []  # drained, but the log was busy: recorded on the next turn
        self.log_checks = LogChecks(self.config.log_path, self.stop_requested.is_set)  # daemon/log_checks.py
        self.damaged: LogDamaged | None = None  # the event log was found damaged: stop, write nothing

    @property
    def waiting(self) -> set[str]:
        """Inbox photos seen and not yet received (inbox-relative): the runner's watcher step takes them."""
        return self.runner.waiting

    # Signals -------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    # Start and stop --------------------------------------------------------------------------------
    def start(self) -> None:
        """Watch, schedule, then tell systemd we are ready: the start-up reconcile is the loop's first step."""
        self.app.ensure_folders()
        self.log_checks.start()  # before anything can write: a log with damaged pages stops the start here
        self._start_control()  # first: it sets the umask for a moment, before any other thread writes a file
        self._start_review()
        # Watch first: a photo dropped while the start-up reconcile lists the inbox is then seen either way.
        self.watcher = Watcher.from_settings(
            [self.config.corpus_dir, self.config.inbox_dir], self._on_watch_event, self.config.watch
        )
        self.watcher.start()
        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        self.scheduler.add_job(
            lambda: self._submit(self._periodic), "interval", seconds=self.config.queue.cluster_interval_s,
            id="housekeeping", max_instances=1, coalesce=True, replace_existing=True,
        )
        self.scheduler.add_job(
            lambda: self._submit(self.log_checks.begin), "interval", seconds=self.config.queue.log_check_interval_s,
            id="log_check", max_instances=1, coalesce=True, replace_existing=True,
        )
        self._start_immich()
        self.scheduler.start()
        self.notifier.ready()
        log.info("facesetd running", corpus=str(self.config.corpus_dir), inbox=str(self.config.inbox_dir),
                 watch="polling" if self.watcher.polling else "inotify", watchdog_s=self.watchdog_s)

    def _start_control(self) -> None:
        """Answer the shell's correcting verbs (`label`, `move`, `restore` ...) on <state>/facesetd.sock: each runs
        on this loop (DaemonRunner), as a click on the review pages does."""
        from state.errors import FacesetdError

        from .control import ControlServer
        from .review.actions import DaemonRunner

        runner = DaemonRunner(self._submit, lambda: self.pipeline)

        def handle(request: dict[str, Any]) -> dict[str, Any]:
            name = request.get("action")
            if name == "where":
                return {"review": self.review.url if self.review is not None else None, "pid": os.getpid()}
            if name == "health":  # answered here, not on the loop: a paused or busy loop must not hold it up
                return {"paused": self.runner.pauses(), "pid": os.getpid()}
            form = request.get("form") or {}
            if not isinstance(name, str) or not isinstance(form, dict) \
                    or not all(isinstance(v, str) for v in form.values()):
                return {"error": "a request names an action (a string) and a form of strings"}
            return {"position": runner(name, form)}

        control = ControlServer(self.config.state_dir, handle)
        try:
            control.start()
        except FacesetdError as e:  # a file system without unix sockets (some network mounts): go on without it
            log.error("control socket not served: corrections from the shell need the daemon stopped, or the"
                      " review pages", error=str(e))
            return
        self.control = control

    def _start_review(self) -> None:
        """Serve the review pages beside the loop; their actions run on this loop (DaemonRunner). A listen
        address that is not loopback without a token stops the start (ConfigError); a port in use is logged and
        the daemon goes on without the pages."""
        if not self.config.review.enabled:
            return
        from state.errors import FacesetdError

        from .review.actions import DaemonRunner
        from .review.server import open_site, server_for

        site, listen = open_site(self.config, DaemonRunner(self._submit, lambda: self.pipeline))
        site.paused = self.runner.pauses  # the work held back for a fault, shown on the facesets page
        try:
            self.review = server_for(site, listen)
        except FacesetdError as e:
            log.error("review pages not served", error=str(e))
            return
        self.review.start()
        log.info("review pages", url=self.review.url)

    def _startup_reconcile(self) -> None:
        """What changed while we were down: the corpus compared with the log, the inbox listed."""
        _result, report = self.pipeline.scan_and_record()
        inbox = self.config.inbox_dir.resolve()
        for rel in self.pipeline.waiting_photos():
            if self.watcher is not None and still_written(inbox, rel, self.config.watch.settle_s):
                self.watcher.settle(inbox / rel)  # a writer may be at work: the watcher reports it when it is done
            else:
                self.runner.waiting.add(rel)
        self._started = True
        log.info("startup reconcile done", **report.as_dict(), inbox_waiting=len(self.waiting))

    def _periodic(self) -> None:
        """The scheduled pass: ask again for analyses missed while no model was up (the merge of duplicate
        identities is the runner's merger, once the inbox is settled)."""
        if not self.runner.models_down():
            self.pipeline.request_missing_analyses()

    def _start_immich(self) -> None:
        if not (self.config.immich.url and self.config.immich.users):
            return
        from .immich.scheduler import ImmichScheduler

        self.immich = ImmichScheduler(self.config.immich, self.app.import_store(), self.config.staging_dir,
                                      scheduler=self.scheduler, min_face_px=self.config.identity.min_face_px,
                                      max_file_bytes=self.config.limits.max_file_bytes,
                                      video_max_bytes=self.config.video.max_file_bytes)

    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping", queued=self.work.qsize())
        if self.control is not None:  # no new request; one already queued is answered "closed" (see events)
            self.control.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.immich is not None:  # first: a poll waiting on a slow Immich is cut off, so the wait below is short
            self.immich.cancel()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.immich is not None:
            self.immich.shutdown(wait=False)
        if self.review is not None:
            self.review.stop()
        if self.damaged is not None:  # nothing more is written into a damaged log
            log.info("facesetd stopped", **self.counts)
            return
        # What is still queued was only observed, not recorded: the next start's reconcile finds it.
        try:
            self.pipeline.state.catch_up()
            self.pipeline.mover.finish_pending()  # projections list files where they are, never where they go
            self.pipeline.renderer.render_dirty()
        except LogBusy as e:  # the marks stay in the log's state: the next start renders them
            log.warning("projections not rendered at stop: the event log is busy", error=str(e))
        except Exception as e:  # noqa: BLE001 - a full or read-only disk at stop: the next start renders them
            log.warning("projections not rendered at stop", error=str(e))
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
        return EXIT_LOG_DAMAGED if self.damaged is not None else 0

    def step(self) -> None:
        """One turn (see _turn); while another process holds the log's write lock, back off and keep pinging."""
        if self.busy.waiting():
            self.stop_requested.wait(TICK_S)
        else:
            try:
                self._turn()
            except LogBusy as e:  # nothing was written; every step is safe to try again
                self.busy.failed(e)
            except (LogDamaged, sqlite3.DatabaseError) as e:  # a damaged log, found by a check or a read
                self._stop_damaged(e)
            else:
                self.busy.succeeded()
        if self.reload_requested.is_set():
            self._reload()
        self._keepalive(time.monotonic())

    def _turn(self) -> None:
        """Record what the watchers saw, do one step of work (or receive the next inbox photo when all else is
        settled), render if due."""
        if self.log_checks.step():  # a slice of a log check; the start-up one must pass before any work
            return
        if not self._started:
            if not self.runner.guard("watcher", self._startup_reconcile):
                self.stop_requested.wait(TICK_S)  # paused (a full or read-only disk): tried again, no busy loop
            return
        self._drain(timeout=TICK_S if not self._last_done or self.runner.models_down() else 0.0)
        received = self.runner.received
        self._last_done = self.runner.turn(max_events=BATCH_EVENTS, stop=self.stop_requested.is_set)
        self.counts["appended"] += self.runner.received - received
        self.counts["handled"] = self.pipeline.handled
        now = time.monotonic()
        if now - self._last_deferred >= DEFERRED_EVERY_S:
            self._last_deferred = now
            self.runner.guard("watcher", lambda: self.counts.__setitem__(
                "appended", self.counts["appended"] + retry_due(self.pipeline)))
        self._say_when_caught_up()

    def _say_when_caught_up(self) -> None:
        """Log once each time all work is done (nothing queued, settling, waiting, unhandled or unrendered), and
        again when the log moved on meanwhile without the loop seeing work (an Immich poll's events, say)."""
        caught_up = (
            not self.waiting and self.work.empty() and (self.watcher is None or self.watcher.pending() == 0)
            and not self.runner.models_down() and not self.runner.paused and self.pipeline.idle() and not self.pipeline.state.dirty()
        )
        if not caught_up:
            self._caught_up_at = None
            return
        head = self.pipeline.log.head()
        if head != self._caught_up_at:
            log.info("caught up", log_position=head, handled=self.pipeline.handled)
            self._caught_up_at = head

    def _stop_damaged(self, error: Exception) -> None:
        """Say the damage once (a log line, and STATUS= for `systemctl status`), then stop, writing nothing more;
        any other SQLite error goes on up."""
        damaged = self.log_checks.damage_in(error)
        if damaged is None:
            raise error
        log.error(str(damaged))
        self.notifier.status(str(damaged))
        self._last_status = time.monotonic()  # the line stays the status until the daemon is gone
        self.damaged = damaged
        self.stop_requested.set()

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
            if not self.runner.guard("watcher", lambda: self._record(batch)):
                self._unrecorded = self._unrecorded or batch  # a fault: all of it again on a later turn

    def _record(self, batch: list[WatchEvent]) -> None:
        corpus, inbox = self.config.corpus_dir.resolve(), self.config.inbox_dir.resolve()
        for w in batch:
            # A photo that is complete, or moved into the inbox (from a temp name, from _rejected/, ...): an
            # arrival. Only noted here; it is received when its turn comes (Pipeline.receive_next).
            if isinstance(w, (FileReady, FileMoved)) and _under(w, inbox):
                path = w.dest if isinstance(w, FileMoved) else w.path
                rel = path.relative_to(inbox).as_posix()
                if is_candidate(rel):
                    self.runner.waiting.add(rel)
        in_corpus = [w for w in batch if _under(w, corpus)]
        if not in_corpus:
            return
        try:
            # Our own decisions are recorded before their files move: carry out what is pending first, so
            # the disk and the state agree and our moves are not taken for files that appeared by hand.
            self.pipeline.state.catch_up()
            self.pipeline.mover.finish_pending()
            events = corpus_events(self.pipeline.state, corpus, in_corpus)
            if events:
                self.pipeline.log.append(events)
                self.counts["appended"] += len(events)
        except LogBusy:
            self._unrecorded = in_corpus  # none of it was recorded: all of it again next turn
            raise

    def _reload(self) -> None:
        """SIGHUP: read the config again and apply every key not marked restart-only (field metadata); a
        changed restart-only key keeps its running value and is named in the log line."""
        from .config import reload_merge

        self.reload_requested.clear()
        self.notifier.reloading()
        try:
            new = self.app.reload_config()
        except Exception as e:  # noqa: BLE001 - a bad edit must not take the daemon down: keep the old config
            log.error("config reload failed; keeping the running config", error=str(e))
        else:
            config, applied, waiting = reload_merge(self.config, new)
            self.config = self.app.config = config
            self.app.configure_logging()
            self.pipeline.apply_config(config)
            self.runner.render_every_s = config.projection.coalesce_s
            with self.work.mutex:  # Queue.put reads maxsize under this lock; wake watchers if it grew
                self.work.maxsize = config.queue.max_pending
                self.work.not_full.notify_all()
            if "queue.cluster_interval_s" in applied and self.scheduler is not None:
                self.scheduler.reschedule_job("housekeeping", trigger="interval",
                                              seconds=config.queue.cluster_interval_s)
            if self.immich is not None:
                for job in self.immich.jobs.values():
                    job.min_face_px = config.identity.min_face_px
                    job.max_file_bytes = config.limits.max_file_bytes
            message = "config reloaded" + (f"; restart to apply: {', '.join(waiting)}" if waiting else "")
            log.info(message, applied=applied, restart_to_apply=waiting)
        self.notifier.ready()

    def _keepalive(self, now: float) -> None:
        if self.watchdog_s is not None and now - self._last_ping >= self.watchdog_s:
            if self.watcher is None or self.watcher.is_alive():  # a dead watcher must get us restarted
                self.notifier.watchdog()
            self._last_ping = now
        if now - self._last_status >= STATUS_EVERY_S:
            pending = self.pipeline.pending_work()
            # queue: files seen and not yet recorded; unhandled: recorded work not yet done (events, moves)
            unhandled = pending["events_unhandled"] + pending["moves_pending"]
            paused = ", ".join(f"{p['follower']} ({p['error']})" for p in self.runner.pauses())
            self.notifier.status(
                f"queue {self.work.qsize() + len(self.waiting)}, unhandled {unhandled}, "
                f"handled {self.counts['handled']}, appended {self.counts['appended']}"
                + (f"; paused: {paused}" if paused else "")
            )
            self._last_status = now


def _under(w: WatchEvent, root: Path) -> bool:
    path = w.dest if isinstance(w, FileMoved) else w.path
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False

