"""`facesetd reconcile`: scan corpus and inbox once, record what changed, run all pending work, exit."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from daemon.cli.printable import counted, printable
from daemon.lock import add_wait_argument

NAME = "reconcile"
HELP = "scan the corpus and the inbox once, run every pending check to completion, then exit"
DRY_RUN_HELP = ("show what would be recorded and what the checks would decide (prunes, quarantines, promotions),"
                " and which inbox photos would be taken in; the checks run on a temporary copy of the log,"
                " nothing in the data folder changes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_wait_argument(p)


DAEMON_HINT = "the running daemon keeps the corpus reconciled by itself; there is no need to run reconcile"
# Events that put a face crop into the corpus or the pool: what the bar counts as "faces".
FACE_KINDS = ("face_added", "pool_face_added")


class Progress:
    """tqdm bars on a terminal, each shown once its total is known: the inbox photos (counted against those
    waiting when they were listed) and the events the checks handled (against those handled plus those still
    in the log; the checks append more as they go), with the faces recorded so far beside them. Log lines
    (warnings, errors; INFO with -v) are printed above the bars (daemon.logs)."""

    def __init__(self, count_faces: Callable[[], int] | None, photos: bool = True) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm
        self.count_faces = count_faces
        # A pty that reports no size (script(1) without a terminal, some IDE consoles) makes tqdm draw nothing.
        size = shutil.get_terminal_size()  # falls back to 80x24 where the pty says 0x0
        self.shape = {"ncols": min(size.columns, 120), "nrows": max(size.lines, 3), "file": sys.stderr}
        self.takes_photos = photos  # a dry run takes no photo in
        self.photos: Any = None
        self.events: Any = None
        self.shown: list[Any] = []  # the bars in the order they appeared, top to bottom

    def handled(self, n: int, left: int) -> None:
        """`n` events just handled, `left` still unhandled (Pipeline.settle's progress callback)."""
        if self.events is None:
            self.events = self._bar(desc="checks", unit="event", total=n + left)
        else:
            self.events.total = self.events.n + n + left
        self._faces()
        self.events.update(n)

    def _bar(self, **kwargs: Any) -> Any:
        """A new bar below those shown already (the first bar to know its total comes first)."""
        bar = self.tqdm(position=len(self.shown), **kwargs, **self.shape)
        self.shown.append(bar)
        return bar

    def _faces(self) -> None:
        if self.count_faces is not None and self.events is not None:
            self.events.set_postfix(faces=self.count_faces(), refresh=False)

    def photo(self, done: int, total: int) -> None:
        """Inbox photos done out of those waiting at the start (Pipeline.reconcile's photos callback; first
        (0, total) once they are listed). No bar for an empty inbox."""
        if not self.takes_photos or not total:
            return
        if self.photos is None:
            self.photos = self._bar(desc="photos", unit="photo", total=total)
        self.photos.total = total
        self.photos.n = done
        self.photos.refresh()

    def close(self) -> None:
        self._faces()
        for bar in self.shown:
            bar.close()  # the top one first: each is left on its line


@contextmanager
def progress_bars(args: argparse.Namespace, count_faces: Callable[[], int] | None,
                  photos: bool = True) -> Iterator[Progress | None]:
    """Bars only for a person at a terminal (not with --json, not into a pipe or the journal)."""
    bars = Progress(count_faces, photos) if sys.stderr.isatty() and not args.json else None
    try:
        yield bars
    finally:
        if bars is not None:  # a tqdm bar has no truth value before it knows its total: never `if bars`
            bars.close()


def _face_counter(app: Any) -> Callable[[], int]:
    """How many face crops were recorded after the log position at the time of the call."""
    log = app.events
    start = log.head()

    def count() -> int:
        return int(log.count_kinds_since(start, FACE_KINDS))
    return count


def run(args: argparse.Namespace, app: Any) -> int:
    from state.logcheck import verify

    if args.dry_run:
        verify(app.config.log_path, change_nothing=True)  # a dry run changes nothing, not even the check's record
        return dry_run(args, app)
    from daemon.deferred import retry_due, waiting
    from daemon.lock import DataFolderBusy

    try:
        app.lock_data_folder(NAME, args.wait, DAEMON_HINT, not_for_daemon=True)
    except DataFolderBusy as busy:
        if busy.holder.verb != "run":
            raise  # a one-shot verb that kept the folder past --wait: one line, exit 1
        return _left_to_the_daemon(args, busy.holder.pid)
    verify(app.config.log_path)  # the whole log read back first: a damaged one stops here, one line, exit 65
    pipeline = app.pipeline
    retry_due(pipeline)  # deferred photos unchanged for the grace: received again, then handled below
    with progress_bars(args, _face_counter(app)) as bars:
        report = pipeline.reconcile(progress=bars.handled if bars is not None else None,
                                    photos=bars.photo if bars is not None else None)
    summary = report.as_dict()
    summary["pending"] = pipeline.pending_work()
    waits = waiting(pipeline)
    summary["waiting"] = [w.path for w in waits]
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    counts = ", ".join(f"{k}={v}" for k, v in summary["events"].items()) or "nothing new"
    print(f"scanned {counted(report.scanned, 'corpus file')} ({report.hashed} hashed); recorded: {counts}"
          + (" (corpus adopted)" if report.adopted else ""))
    print(f"received {counted(report.received, 'inbox photo')}; handled {counted(report.handled, 'event')}; "
          f"{counted(report.promoted, 'new faceset')} from the pool")
    if report.merged:
        print(f"merged {counted(report.merged, 'faceset')} into others (duplicate identities; `facesetd events --kind"
              " facesets_merged`, undone by `facesetd restore ID`)")
    for w in waits:  # left in place: its writer may not be done, it cannot be read, or a folder it goes into is blocked
        if w.blocked:
            print(f"waiting: inbox/{printable(w.path)} is held back: {printable(w.blocked)}")
            continue
        if w.reason == "permission":
            print(f"waiting: inbox/{printable(w.path)} cannot be read (permission denied), left in place; the next"
                  " reconcile (or the daemon, within seconds) takes it once it can be read (chmod 644)")
            continue
        print(f"waiting: inbox/{printable(w.path)} does not decode yet (written {w.written_ago_s:.0f} s ago), left in place"
              f" for its writer; unchanged {w.retry_in_s:.0f} s more, the next reconcile (or the daemon)"
              " rejects it as unreadable")
    return 0


def _left_to_the_daemon(args: argparse.Namespace, pid: int | None) -> int:
    """The daemon holds the folder: it reconciles continuously, so there is nothing for this process to do."""
    if args.json:
        print(json.dumps({"left_to_daemon": {"pid": pid}}, sort_keys=True))
    else:
        print(f"facesetd run (pid {pid}) is working on this data folder and keeps it reconciled by itself;"
              " nothing to do here (`facesetd status` shows its progress)")
    return 0


def dry_run(args: argparse.Namespace, app: Any) -> int:
    """No lock, no write: the checks run on a copy of the log (daemon.dry_run)."""
    from daemon.dry_run import dry_run_reconcile

    with progress_bars(args, None, photos=False) as bars:  # a dry run takes no photo in
        report = dry_run_reconcile(app.config, app.open_engines, progress=bars.handled if bars is not None else None)
    if args.json:
        summary = report.as_dict()
        summary["planned"] = report.planned
        print(json.dumps(summary, sort_keys=True))
        return 0
    stages = [p["stage"] for p in report.planned]
    for item in report.planned:
        line = f"would record {item['kind']:<24} {item['subject']}"
        print(printable(f"{line}  -- {item['reason']}" if item["reason"] else line))
    print(f"{counted(stages.count('scan'), 'event')} would be recorded ({counted(report.scanned, 'file')} scanned)")
    print(f"the checks would record {counted(stages.count('check'), 'decision or finding', 'decisions and findings')};"
          f" {counted(stages.count('inbox'), 'inbox photo')} would be received (their faces are routed only by a real reconcile or the daemon; a photo that"
          " does not decode yet waits for its writer)")
    return 0
