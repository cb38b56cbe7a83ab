"""`facesetd backfill DIR` and `facesetd backfill --immich`: an archive's (or an Immich library's) model work on Ray
(a local one, or a cluster), then its photos taken in through the inbox by this process, the data folder's one
writer (daemon/backfill/). Ray is the optional extra `facesetd[ray]`: nothing here imports it until the verb runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.cli.printable import counted, printable
from daemon.lock import add_wait_argument

NAME = "backfill"
HELP = ("analyse an archive's photos (or an Immich library's, --immich) on Ray (a local Ray, or a cluster with"
        " --address), then take them in as reconcile (or `immich poll --once`) would; needs the extra:"
        " pip install 'facesetd[ray]'")
DAEMON_HINT = "stop it while the backfill takes the photos in (the backfill is then the data folder's one writer)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, metavar="DIR", nargs="?", help="the folder of photos (read only; its photos are"
                   " copied into the inbox). On a cluster it must be at the same path on every node")
    p.add_argument("--immich", action="store_true", help="instead of DIR: one polling pass of every configured Immich"
                   " user stages the originals (as `immich poll --once`), which are analysed on Ray, then routed. On a"
                   " cluster the data folder's staging folder must be at the same path on every node")
    p.add_argument("--address", help="the Ray cluster to join: auto (the one `ray start` began on this machine),"
                   " HOST:PORT or ray://HOST:10001; default: a local Ray on this machine")
    p.add_argument("--workers", type=int, metavar="N", help="Ray actors running the models (default: one per GPU"
                   " of the cluster, else one per CPU)")
    p.add_argument("--records", type=Path, metavar="DIR", help="where the records go (Parquet, by photo and crop"
                   " sha256; default <data-dir>/state/records)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    from state.errors import FacesetdError

    if (args.dir is None) == (not args.immich):
        raise FacesetdError("backfill: give a folder of photos (DIR) or --immich, one of the two")
    from daemon.backfill import require_ray

    require_ray()  # one line naming the extra, before anything is touched
    if args.workers is not None and args.workers < 1:
        raise FacesetdError("backfill: --workers must be at least 1")
    from daemon.backfill.ingest import Backfill

    emit = _emitter(args.json or not sys.stdout.isatty())
    poll = None
    if args.immich:
        from daemon.cli.immich import configured_users, poll_users

        users = configured_users(app, None)  # a config without [immich] stops here, before the lock

        def poll(pipeline: Any) -> None:
            for result in poll_users(app, users, app.import_store(corpus=pipeline.state)):
                emit({"stage": "poll", "user": result.user, "listed": result.listed, **result.counts})

    app.lock_data_folder(NAME, args.wait, DAEMON_HINT, not_for_daemon=True)
    app.ensure_folders()
    records = args.records or app.config.state_dir / "records"
    backfill = Backfill(app.config, app.events, args.dir, records, open_engines=app.open_engines, emit=emit,
                        address=args.address, workers=args.workers, poll=poll)
    report = backfill.run()
    summary = report.as_dict()
    if args.json:
        print(json.dumps({"stage": "done", **summary}, sort_keys=True))
        return 0
    source = "Immich" if args.immich else str(args.dir)
    ray = f" on Ray ({counted(report.ray.workers, 'worker')}, {report.ray.address})" if report.ray else ""
    rate = f", {report.analysed / report.analyse_s:.1f} photos/s" if report.analyse_s > 0 else ""
    print(printable(
        f"backfill of {source}: {counted(report.photos, 'photo')} ({report.known} known already); "
        f"{report.analysed} analysed{ray}{rate}, {report.had_records} from earlier records; "
        f"{counted(report.received, 'photo')} received, {counted(report.logged, 'event')} recorded"
        + (f"; {report.fell_back} analysed here (no record)" if report.fell_back else "")))
    if report.skipped_links:
        print(f"left out {counted(report.skipped_links, 'symbolic link')} (not followed)", file=sys.stderr)
    return 0


def _emitter(as_json: bool) -> Callable[[dict[str, Any]], None]:
    """Progress: a JSON line per batch (piped, or --json), or a line a person reads on a terminal."""
    if as_json:
        return lambda line: print(json.dumps(line, sort_keys=True), flush=True)

    def show(line: dict[str, Any]) -> None:
        print(printable(_said(line)), flush=True)

    return show


def _said(line: dict[str, Any]) -> str:
    stage = line["stage"]
    if stage == "poll":
        counts = ", ".join(f"{k} {v}" for k, v in sorted(line.items()) if k not in ("stage", "user", "listed"))
        return f"Immich user {line['user']}: listed {line['listed']}" + (f"; {counts}" if counts else "")
    done, of = (line["analysed"], line["of"]) if stage == "analyse" else (line["ingested"], line["of"])
    what = "analysed on Ray" if stage == "analyse" else "ingested"
    unit = line.get("unit", "photos")
    rate = f", {line['rate']:.1f} {unit}/s" if line.get("rate") else ""
    eta = f", about {_duration(line['eta_s'])} left" if line.get("eta_s") else ""
    return f"{what}: {done}/{of} {unit}{rate}{eta}"


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else (f"{m} min {s:02d} s" if m else f"{s} s")
