"""`facesetd reconcile`: scan corpus and inbox once, record what changed, run all pending work, exit."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from daemon.lock import add_wait_argument

NAME = "reconcile"
HELP = "scan the corpus and the inbox once, run every pending check to completion, then exit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print what would be recorded; change nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_wait_argument(p)


DAEMON_HINT = "the running daemon keeps the corpus reconciled by itself; there is no need to run reconcile"


def run(args: argparse.Namespace, app: Any) -> int:
    from daemon.deferred import retry_due, waiting

    if not args.dry_run:  # a dry run records nothing and moves nothing
        app.lock_data_folder(NAME, args.wait, DAEMON_HINT)
    pipeline = app.pipeline
    if not args.dry_run:
        retry_due(pipeline)  # deferred photos unchanged for the grace: received again, then handled below
    bar = None
    if sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        bar = tqdm(desc="handling", unit="event", file=sys.stderr)
    try:
        report = pipeline.reconcile(dry_run=args.dry_run, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:  # a tqdm bar has no truth value before it knows its total
            bar.close()
    summary = report.as_dict()
    summary["pending"] = pipeline.pending_work()
    waits = [] if args.dry_run else waiting(pipeline)
    summary["waiting"] = [w.path for w in waits]
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    elif args.dry_run:
        for item in report.planned:
            print(f"would record {item['kind']:<24} {item['subject']}")
        print(f"{len(report.planned)} events would be recorded ({report.scanned} files scanned)")
    else:
        counts = ", ".join(f"{k}={v}" for k, v in summary["events"].items()) or "nothing new"
        print(f"scanned {report.scanned} corpus files ({report.hashed} hashed); recorded: {counts}"
              + (" (corpus adopted)" if report.adopted else ""))
        print(f"received {report.received} inbox photos; handled {report.handled} events; "
              f"{report.promoted} new facesets from the pool")
        for w in waits:  # left in place: its writer may not be done
            print(f"waiting: inbox/{w.path} does not decode yet (written {w.written_ago_s:.0f} s ago), left in place"
                  f" for its writer; unchanged {w.retry_in_s:.0f} s more, the next reconcile (or the daemon)"
                  " rejects it as unreadable")
    return 0
