"""The backfill from the archive to the log: list, hash, analyse what has no record (on Ray), then ingest in order.

The ingest is the inbox path's, run by this process as the data folder's one writer (it holds the folder's lock,
as `facesetd reconcile` does): the photos the log has never seen are copied into the inbox (each written whole
under a temp name, then renamed; the archive is only read) and `Pipeline.reconcile` receives them in the inbox's
order, each settled before the next, with a PrecomputedEngine and a PrecomputedScorer answering the router and
the checks from the records. So every decision is the one a reconcile of the same photos dropped into the inbox
makes.

From Immich (`--immich`), the source is the poller's: one pass for every configured user lists the library and
stages the originals (daemon/immich/poller.py, as `facesetd immich poll --once`), the staged originals not yet
routed are analysed on Ray, and the pipeline then routes them in log order, as the daemon would.

Run again, it is idempotent: photos whose bytes the log has received are neither copied nor analysed again, and
photos with a record are not sent to Ray again, so a run killed anywhere picks up where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.inbox import list_waiting
from daemon.pipeline import Pipeline
from gpu_agent.interface import FaceEngine, OcclusionScorer
from state import names
from state.atomic import atomic_write
from state.errors import FacesetdError
from state.eventlog import EventLog
from state.scan import sha256_file

from .analyse import RayRun, analyse_on_ray
from .precomputed import PrecomputedEngine, PrecomputedScorer
from .records import PHOTO, engine_identity, model_key, read_records, recorded, write_records

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ArchivePhoto:
    rel: str  # relative to the archive, as the OS has it (see daemon.inbox.list_waiting)
    sha256: str


@dataclass
class BackfillReport:
    photos: int = 0  # candidate photos in the archive
    skipped_links: int = 0  # symbolic links in the archive, not followed
    known: int = 0  # photos whose bytes the log had received already: not copied, not analysed
    had_records: int = 0  # photos with a record from an earlier run: not analysed again
    analysed: int = 0  # photos sent to Ray by this run
    analyse_s: float = 0.0
    copied: int = 0  # photos copied into the inbox
    received: int = 0  # inbox photos the pipeline took in
    from_records: int = 0  # photos the router got from a record
    fell_back: int = 0  # photos the configured engine analysed at receipt (no usable record)
    crops_from_records: int = 0  # crops the embed and multi-face checks got from a record
    crops_fell_back: int = 0  # crops the configured engine analysed (no record)
    scored_from_records: int = 0  # crops the occlusion check got from a record
    scored_here: int = 0  # crops the configured occlusion scorer scored (no record, or another scorer's)
    events: dict[str, int] = field(default_factory=dict)  # what the reconcile recorded (scan, photos received)
    logged: int = 0  # events appended to the log by the ingest in all (the checks' decisions included)
    ingest_s: float = 0.0
    ray: RayRun | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "ray"}
        out["analyse_s"], out["ingest_s"] = round(self.analyse_s, 3), round(self.ingest_s, 3)
        out["ray"] = None if self.ray is None else dict(self.ray.__dict__)
        return out


def pace(done: int, total: int, start: float) -> dict[str, float | None]:
    """A progress line's rate (per second since `start`, time.monotonic) and seconds left at that rate (None
    before there is a rate)."""
    elapsed = time.monotonic() - start
    rate = done / elapsed if elapsed > 0 else 0.0
    return {"rate": round(rate, 2) if rate else None, "eta_s": round((total - done) / rate, 1) if rate else None}


def list_archive(archive: Path) -> tuple[list[str], int]:
    """The archive's photos by the inbox's candidate rules and order, and how many links were left out (the
    inbox follows a link only into the data folder; an archive's are not followed at all)."""
    found = list_waiting(archive)
    plain = [rel for rel in found if not os.path.islink(archive / rel) and os.path.isfile(archive / rel)]
    return plain, len(found) - len(plain)


def check_archive(archive: Path, config: Config) -> None:
    """The archive must be a folder apart from the data folder's inbox and corpus (nor hold the data folder)."""
    if not archive.is_dir():
        raise FacesetdError(f"backfill: {archive} is not a folder")
    here = archive.resolve()
    for inside in (config.inbox_dir, config.corpus_dir):
        if here == inside.resolve() or inside.resolve() in here.parents:
            raise FacesetdError(f"backfill: {archive} is inside {inside}; give a folder outside the data folder's"
                                " inbox and corpus")
    if here == config.data_dir.resolve() or here in config.data_dir.resolve().parents:
        raise FacesetdError(f"backfill: {archive} holds the data folder {config.data_dir}; give the photos' folder")


def staged_photos(staging: Path) -> list[Path]:
    """The Immich originals waiting in the staging folder (<user>/<sha[:2]>/<name>; partial downloads and
    temp names left out), by path: a routed one has moved on to inbox/_processed/."""
    if not staging.is_dir():
        return []
    return sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink()
                  and not any(part.startswith(".") for part in p.relative_to(staging).parts))


class Backfill:
    def __init__(self, config: Config, events: EventLog, archive: Path | None, records_dir: Path, *,
                 open_engines: Callable[[], tuple[FaceEngine, OcclusionScorer]], emit: Emit,
                 address: str | None = None, workers: int | None = None,
                 poll: Callable[[Pipeline], None] | None = None) -> None:
        """A backfill of `archive`, or (archive None) of what `poll(pipeline)` stages from Immich."""
        self.config = config
        self.events = events
        self.archive = archive.absolute() if archive else None  # the actors read by path, from other folders
        self.poll = poll
        self.records_dir = records_dir
        self.open_engines = open_engines
        self.emit = emit
        self.address = address
        self.workers = workers
        self.batch = max(1, config.models.batch_size)
        self.report = BackfillReport()
        self.engine: PrecomputedEngine | None = None
        self.scorer: PrecomputedScorer | None = None
        self.model = ""  # the records' key of the configured models (records.model_key)
        self.wanted: set[str] = set()  # the photos the ingest receives: only their records are read

    def run(self) -> BackfillReport:
        if self.archive is not None:
            check_archive(self.archive, self.config)
        pipeline = Pipeline(self.config, self.events, open_engines=self._engines)
        pipeline.state.catch_up()
        self.model = model_key(engine_identity(self.config.models, self.config.models_dir))
        archive = self.archive
        if archive is None:
            return self._from_immich(pipeline)
        rels, self.report.skipped_links = list_archive(archive)
        photos = [ArchivePhoto(rel, sha256_file(archive / rel)) for rel in rels]
        new = [p for p in photos if not pipeline.state.photo_recorded_with(p.sha256)]
        self.report.photos, self.report.known = len(photos), len(photos) - len(new)
        self._check_inbox(archive, new)
        self._analyse_unrecorded([(p.sha256, archive / p.rel) for p in new])
        self._copy_in(archive, new)
        self._ingest(lambda photos: pipeline.reconcile(photos=photos), {p.sha256 for p in new})
        return self.report

    def _from_immich(self, pipeline: Pipeline) -> BackfillReport:
        """One poll of every user stages the originals; those not routed yet are analysed, then routed."""
        assert self.poll is not None
        self.poll(pipeline)
        staged = [(sha256_file(path), path) for path in staged_photos(self.config.staging_dir)]
        waiting = [(sha, path) for sha, path in staged if not pipeline.state.processed_photo_with(sha)]
        self.report.photos, self.report.known = len(staged), len(staged) - len(waiting)
        self._analyse_unrecorded(waiting)

        def route(progress: Callable[[int, int], None]) -> None:
            handled = [0]

            def events(done: int, left: int) -> None:
                handled[0] += done
                progress(handled[0], handled[0] + left)

            pipeline.settle(progress=events)
            pipeline.promote_pool()  # as the daemon (and `immich poll --once`) would, once the photos are in

        self._ingest(route, {sha for sha, _path in waiting}, unit="events")
        self.report.received = sum(1 for _sha, path in waiting if not path.exists())  # routed: moved on
        return self.report

    def _analyse_unrecorded(self, photos: list[tuple[str, Path]]) -> None:
        """Send the photos (sha256, path) with no record for the configured models to Ray."""
        have = recorded(self.records_dir, self.model)
        todo: dict[str, str] = {}
        for sha, path in photos:
            if sha in have:
                self.report.had_records += 1
            else:
                todo.setdefault(sha, str(path.absolute()))
        if todo:
            self._analyse(list(todo.values()))

    # Analysis ---------------------------------------------------------------------------------------
    def _analyse(self, paths: list[str]) -> None:
        start = time.monotonic()

        def on_records(table: Any) -> None:
            write_records(self.records_dir, table)
            self.report.analysed += table.column("kind").to_pylist().count(PHOTO)
            self.emit({"stage": "analyse", "analysed": self.report.analysed, "of": len(paths),
                       **pace(self.report.analysed, len(paths), start)})

        self.report.ray = analyse_on_ray(paths, settings=self.config.models, models_dir=self.config.models_dir,
                                         max_pixels=self.config.limits.max_pixels,
                                         min_face_px=self.config.identity.min_face_px, address=self.address,
                                         workers=self.workers, batch_size=self.batch, on_records=on_records)
        self.report.analyse_s = time.monotonic() - start

    # Ingest ------------------------------------------------------------------------------------------
    def _check_inbox(self, archive: Path, new: list[ArchivePhoto]) -> None:
        """Stop before anything is done if an inbox file has an archive photo's name but other bytes."""
        inbox = self.config.inbox_dir
        for p in new:
            target = inbox / p.rel
            if (target.is_symlink() or target.exists()) and not (target.is_file() and sha256_file(target) == p.sha256):
                raise FacesetdError(f"backfill: inbox/{names.escape(p.rel)} exists with other bytes than "
                                    f"{names.escape(str(archive / p.rel))}; move one of them and run it again")

    def _copy_in(self, archive: Path, new: list[ArchivePhoto]) -> None:
        """Copy the new photos into the inbox under their archive path (a copy there already is kept)."""
        inbox = self.config.inbox_dir
        for p in new:
            target = inbox / p.rel
            if target.is_file() and not target.is_symlink():
                continue  # copied by a run that stopped before receiving it (_check_inbox compared its bytes)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, (archive / p.rel).read_bytes())
            self.report.copied += 1

    def _engines(self) -> tuple[FaceEngine, OcclusionScorer]:
        face, scorer = self.open_engines()
        records = read_records(self.records_dir, self.model, self.wanted)
        self.engine, self.scorer = PrecomputedEngine(records, face), PrecomputedScorer(records, scorer)
        return self.engine, self.scorer

    def _ingest(self, receive: Callable[[Callable[[int, int], None]], Any], wanted: set[str], unit: str = "photos") -> None:
        """`receive(progress)` takes the photos in, `progress(done, total)` as it goes (photos, or the log's events
        from Immich); the records of `wanted` answer."""
        self.wanted = wanted
        start = time.monotonic()
        head = self.events.head()

        shown = [0]

        def progress(done: int, total: int) -> None:
            if done > shown[0] and (done % self.batch == 0 or done == total):
                shown[0] = done
                self.emit({"stage": "ingest", "ingested": done, "of": total, "unit": unit, **pace(done, total, start)})

        report = receive(progress)
        if report is not None:  # a reconcile's
            self.report.received = report.received
            self.report.events = dict(sorted(report.appended.items()))
        self.report.logged = self.events.head() - head
        if self.engine is not None:
            r, e = self.report, self.engine
            r.from_records, r.fell_back = e.answered, e.fell_back
            r.crops_from_records, r.crops_fell_back = e.crops_answered, e.crops_fell_back
        if self.scorer is not None:
            self.report.scored_from_records, self.report.scored_here = self.scorer.answered, self.scorer.fell_back
        self.report.ingest_s = time.monotonic() - start
