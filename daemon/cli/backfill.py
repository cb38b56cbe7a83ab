"""`facesetd backfill DIR`: an archive's model work on Ray (a local one, or a cluster), then its photos taken in
through the inbox by this process, the data folder's one writer (daemon/backfill/). Ray is the optional extra
`facesetd[ray]`: nothing here imports it until the verb runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from daemon.cli.printable import counted, printable
from daemon.lock import add_wait_argument

NAME = "backfill"
HELP = ("analyse an archive's photos on Ray (a local Ray, or a cluster with --address), then take them in through"
        " the inbox in name order, as reconcile would; needs the extra: pip install 'facesetd[ray]'")
DAEMON_HINT = "stop it while the backfill takes the photos in (the backfill is then the data folder's one writer)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, metavar="DIR", help="the folder of photos (read only; its photos are copied"
                   " into the inbox). On a cluster it must be at the same path on every node")
    p.add_argument("--address", help="the Ray cluster to join: auto (the one `ray start` began on this machine),"
                   " HOST:PORT or ray://HOST:10001; default: a local Ray on this machine")
    p.add_argument("--workers", type=int, metavar="N", help="Ray actors running the face engine (default: one per GPU"
                   " of the cluster, else one per CPU)")
    p.add_argument("--records", type=Path, metavar="DIR", help="where the records go (Parquet, by photo sha256;"
                   " default <data-dir>/state/records)")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    add_wait_argument(p)


def run(args: argparse.Namespace, app: Any) -> int:
    from daemon.backfill import require_ray

    require_ray()  # one line naming the extra, before anything is touched
    if args.workers is not None and args.workers < 1:
        from state.errors import FacesetdError

        raise FacesetdError("backfill: --workers must be at least 1")
    from daemon.backfill.ingest import Backfill

    app.lock_data_folder(NAME, args.wait, DAEMON_HINT, not_for_daemon=True)
    app.ensure_folders()
    records = args.records or app.config.state_dir / "records"

    def emit(line: dict[str, Any]) -> None:
        print(json.dumps(line, sort_keys=True), flush=True)

    backfill = Backfill(app.config, app.events, args.dir, records, open_engines=app.open_engines, emit=emit,
                        address=args.address, workers=args.workers)
    report = backfill.run()
    summary = report.as_dict()
    if args.json:
        print(json.dumps({"stage": "done", **summary}, sort_keys=True))
        return 0
    ray = f" on Ray ({counted(report.ray.workers, 'worker')}, {report.ray.address})" if report.ray else ""
    rate = f", {report.analysed / report.analyse_s:.1f} photos/s" if report.analyse_s > 0 else ""
    print(printable(
        f"backfill of {args.dir}: {counted(report.photos, 'photo')} ({report.known} known already); "
        f"{report.analysed} analysed{ray}{rate}, {report.had_records} from earlier records; "
        f"{counted(report.received, 'photo')} received, {counted(report.logged, 'event')} recorded"
        + (f"; {report.fell_back} analysed here (no record)" if report.fell_back else "")))
    if report.skipped_links:
        print(f"left out {counted(report.skipped_links, 'symbolic link')} (not followed)", file=sys.stderr)
    return 0
