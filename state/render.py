"""File projections: per-faceset manifest.json and two .fsz bundles, and the master manifest.

Everything here is a pure function of the corpus state (itself a function of the log) and of the
PNG bytes on disk, so replaying the same log gives byte-identical files. Writes are atomic and
skipped when the bytes are unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import structlog

from . import VERSION
from .atomic import SyncSet, atomic_write, link_or_write
from .corpus_state import MASTER_DIRTY, CorpusState
from .fsz import build_fsz
from .layout import (
    ACTIVE_AREA,
    AREA_NAMES,
    AREAS,
    MASTER_MANIFEST,
    MERGED_AREA,
    QUARANTINE_AREAS,
    faceset_dir,
    fsz_names,
)
from .queries import MadeEraBucket, MergeInEffect
from .topn import choose_top

log = structlog.get_logger("facesetd.render")


def dumps(obj: Any) -> bytes:
    """Stable JSON: sorted keys, two-space indentation, trailing newline.

    orjson, because the standard library falls back to its pure-Python encoder whenever `indent` is
    set, which made manifest writing the slowest part of a rebuild."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def _era_entry(b: MadeEraBucket) -> dict[str, Any]:
    """An era bucket `eras split` made, as its manifest and the master's `era_buckets` show it."""
    return {"faceset": b.faceset, "family": b.family, "year": b.year, "first_year": b.first_year,
            "last_year": b.last_year, "anchors": b.anchors, "decision": b.decision}


class Renderer:
    def __init__(self, state: CorpusState, corpus: Path, top_n: int = 8) -> None:
        self.state = state
        self.corpus = Path(corpus)
        self.top_n = top_n
        self.synced = SyncSet()  # every projection path this render passed through, synced before marks clear

    def render_dirty(self) -> list[str]:
        """Rewrite the projections of every faceset marked dirty (and the master manifest)."""
        dirty = self.state.dirty()
        if not dirty:
            # A corpus whose facesets never changed (a first photo whose face went to the pool) still gets its
            # master manifest, as `rebuild` writes it: the live corpus and the rebuilt one are the same files.
            if not (self.corpus / MASTER_MANIFEST).exists():
                self._write([])
                self._sync_or_keep()
            return []
        names = [d for d in dirty if d != MASTER_DIRTY]
        # era buckets holding PNGs slotted from a changed faceset change with it
        marks = ",".join("?" * len(names))
        eras = [r[0] for r in self.state.query(
            f"SELECT DISTINCT era FROM faces WHERE era IS NOT NULL AND faceset IN ({marks})", tuple(names))]
        rendered = [d for d in dirty if d != MASTER_DIRTY]
        self._write(sorted(set(names) | set(eras)))
        if self._sync_or_keep():
            self.state.clear_dirty(dirty)
        return rendered

    def _sync_or_keep(self) -> bool:
        """Make the files just written durable; False (logged) when that failed: the dirty marks then stay, and
        the next render (after coalesce_s) writes and syncs them again."""
        try:
            self._sync()
        except OSError as e:
            log.error("projections not made durable: they stay marked for the next render", error=str(e))
            return False
        return True

    def rebuild(self) -> None:
        """Regenerate every projection from the log alone: the state tables replayed, every file rewritten."""
        self.state.reset()
        self.state.catch_up()
        self.render_all()

    def render_all(self) -> None:
        dirty = self.state.dirty()
        self._write([name for name, _area in self.state.facesets()])
        self._sync()
        self.state.clear_dirty(dirty)

    # Files are written without per-file fsync, then made durable together (syncfs of the corpus's file
    # system, not os.sync of every file system on the host) before the dirty marks are cleared: a crash
    # before that leaves them marked, and the next start writes them again.
    def _write(self, names: list[str]) -> None:
        self.synced = SyncSet()
        for name in names:
            self.render_faceset(name)
        self.render_master()

    def _sync(self) -> None:
        try:
            self.synced.sync()
        finally:
            self.synced = SyncSet()

    # One faceset ---------------------------------------------------------------------------------
    def faceset_manifest(self, name: str) -> tuple[dict[str, Any], list[str], list[str]]:
        area = self.state.faceset_area(name) or ""
        rows = self.state.query(
            "SELECT name, dropped, sha256, size, source, scores, quality, era, pruned_by FROM faces"
            " WHERE faceset=? ORDER BY dropped, name",
            (name,),
        )
        faces, dropped = [], []
        for fname, is_dropped, sha, size, source, scores, quality, era, pruned_by in rows:
            entry: dict[str, Any] = {
                "file": fname,
                "sha256": sha,
                "size": size,
                "source": json.loads(source),
                "scores": json.loads(scores),
            }
            if quality is not None:
                entry["quality"] = round(quality, 6)
            if era:
                entry["era"] = era
            if is_dropped:
                entry["file"] = f"_dropped/{fname}"
                entry["pruned_by"] = pruned_by
                dropped.append(entry)
            else:
                faces.append(entry)
        # An era bucket's .fsz also carries the family's PNGs slotted into it (read from where they are,
        # never copied): roop then averages the era's anchors and its newer photos together.
        slotted = []
        for path, sha, size, source, scores, quality in self.state.query(
            "SELECT x.path, x.sha256, x.size, x.source, x.scores, x.quality FROM faces x"
            " JOIN facesets s ON s.name = x.faceset WHERE x.era = ? AND x.dropped = 0 AND s.area = ''"
            " AND x.faceset != ? ORDER BY x.path",
            (name, name),
        ):
            entry = {"file": path, "sha256": sha, "size": size, "source": json.loads(source),
                     "scores": json.loads(scores), "slotted_from": path.split("/", 1)[0]}
            if quality is not None:
                entry["quality"] = round(quality, 6)
            slotted.append(entry)
        faces_and_slotted = faces + slotted
        full = [f["file"] for f in faces_and_slotted]
        top, cosine = self._top(name, faces_and_slotted)
        if len(full) <= self.top_n:
            # every face makes the top N: the top .fsz is the full one (one file, hard-linked under both
            # names), so its members, and top_files, come in the full file's order
            top = list(full)
        full_name, top_name = fsz_names(name, self.top_n)
        adopted = self.state.query("SELECT adopted FROM facesets WHERE name=?", (name,))
        manifest: dict[str, Any] = {
            "faceset": name,
            "area": area or "active",
            "faces": faces,
            "dropped": dropped,
            "slotted": slotted,
            "fsz": {"full": full_name, "top": top_name, "top_n": self.top_n, "top_files": top,
                    "top_cosine": cosine},
            "generator": f"facesetd {VERSION}",
        }
        label = self.state.label_of(name)
        if label:  # a person's name for it (`facesetd label`); the folder and .fsz names stay
            manifest["label"] = label
        if adopted and adopted[0][0]:
            manifest["adopted_from"] = {k: v for k, v in json.loads(adopted[0][0]).items() if k != "faces"}
        made = self._made_era(name)
        if made is not None:
            manifest["era"] = made
        merge = self.state.merges_in_effect().get(name) if area == MERGED_AREA else None
        if merge is not None:
            manifest["merged_into"] = merge.into
        return manifest, full, top

    def _top(self, name: str, entries: list[dict[str, Any]]) -> tuple[list[str], float | None]:
        """The top N's files in the order chosen and cos(their mean, the centroid): the N faces whose mean lies
        closest to the person's centroid, spread over sources and poses, quality as a floor (state/topn.py). Each
        chosen entry gains `top`, why it is there."""
        choice = choose_top(self.state.top_inputs(name).get(name, []), self.top_n)
        for f in entries:
            if f["file"] in choice.reasons:
                f["top"] = dict(choice.reasons[f["file"]])
        return list(choice.files), choice.cosine

    def _made_era(self, name: str) -> dict[str, Any] | None:
        """An era bucket `eras split` made: its family, year and window (the master's `era_buckets` entry)."""
        return next((_era_entry(b) for b in self.state.made_era_buckets() if b.faceset == name), None)

    def render_faceset(self, name: str) -> None:
        area = self.state.faceset_area(name)
        if area is None:
            return
        folder = self.corpus / faceset_dir(area, name)
        if not folder.is_dir():
            if area or self._made_era(name) is None:
                return
            # An era bucket `eras split` made has no PNG of its own: the log made it, so its folder is made here.
            (folder / "faces").mkdir(parents=True, exist_ok=True)
            self.synced.add_folder(self.corpus)
        manifest, full, top = self.faceset_manifest(name)
        faces_dir = folder / "faces"
        blobs: dict[str, bytes] = {}
        for fname in full:
            try:  # own faces by name; slotted faces by their corpus path
                blobs[fname] = (faces_dir / fname if "/" not in fname else self.corpus / fname).read_bytes()
            except FileNotFoundError:
                log.warning("face missing while writing .fsz", faceset=name, file=fname)
        full_name, top_name = fsz_names(name, self.top_n)
        full_fsz = build_fsz(blobs[f] for f in full if f in blobs)
        # The .fsz files first, then the manifest that lists them: a write that fails between the two (a full disk)
        # never leaves a manifest naming an .fsz that is not there.
        written = atomic_write(folder / full_name, full_fsz, durable=False)
        if top == full:  # the same bytes: stored once, under both names (a copy where links are impossible)
            written |= link_or_write(folder / full_name, folder / top_name, full_fsz)
        else:
            written |= atomic_write(folder / top_name, build_fsz(blobs[f] for f in top if f in blobs), durable=False)
        written |= atomic_write(folder / "manifest.json", dumps(manifest), durable=False)
        for fname in ("manifest.json", full_name, top_name):
            self.synced.add(folder / fname)
        if written:
            log.info("projections written", faceset=name, faces=len(full), area=area or "active")

    # The master manifest ------------------------------------------------------------------------
    def master_manifest(self) -> dict[str, Any]:
        counts = {
            n: (a, c, d)
            for n, a, c, d in self.state.query(
                "SELECT f.name, f.area, COALESCE(SUM(1 - x.dropped), 0), COALESCE(SUM(x.dropped), 0)"
                " FROM facesets f LEFT JOIN faces x ON x.faceset = f.name GROUP BY f.name ORDER BY f.name"
            )
        }
        # The last decision that moved each faceset to its area: a quarantine, or a thin faceset's return.
        reasons = {
            subject.split("/")[-1]: (pos, check)
            for pos, subject, check in self.state.query(
                "SELECT position, subject, check_name FROM decisions"
                " WHERE kind IN ('faceset_quarantined', 'faceset_returned')"
                " AND state IN ('pending','done') ORDER BY position"
            )
        }

        labels = self.state.labels()

        def entry(n: str) -> dict[str, Any]:
            area, faces, dropped = counts[n]
            e: dict[str, Any] = {"name": n, "faces": faces, "dropped": dropped}
            if n in reasons:
                e["decision"], e["check"] = reasons[n]
            if n in labels:
                e["label"] = labels[n]
            return e

        adopted_rows = self.state.query("SELECT value FROM meta WHERE key='adopted_master'")
        adopted = json.loads(adopted_rows[0][0]) if adopted_rows else {}
        by_area: dict[str, list[dict[str, Any]]] = {area: [] for area in AREAS}
        emptied = self.state.emptied_facesets()
        for n, (area, _f, _d) in counts.items():
            by_area.setdefault(area, []).append(entry(n))
        merged_into(by_area[MERGED_AREA], self.state.merges_in_effect(), adopted)
        for area in QUARANTINE_AREAS:  # an undo's empty husk, unless an adopted master says "into"
            by_area[area] = [e for e in by_area[area] if e["name"] not in emptied or "into" in e]
        thin_eras = self.state.query("SELECT value FROM meta WHERE key='thin_eras'")
        return {
            "facesets": by_area[ACTIVE_AREA],
            **{AREA_NAMES[area]: by_area[area] for area in QUARANTINE_AREAS},
            "thin_eras": json.loads(thin_eras[0][0]) if thin_eras else adopted.get("thin_eras", []),
            "era_buckets": [_era_entry(b) for b in self.state.made_era_buckets()],
            "provenance": {
                "generator": f"facesetd {VERSION}",
                # the last event that changed what this manifest shows, not the log's head: events that
                # touch only the pool or the inbox do not rewrite it, and a rebuild must give the same bytes
                "log_position": self.state.master_position(),
                "adopted": {k: v for k, v in adopted.items() if k not in ("facesets", "masked", "merged", "thin_eras")},
            },
        }

    def render_master(self) -> None:
        if not self.corpus.is_dir():
            self.corpus.mkdir(parents=True, exist_ok=True)
            self.synced.add_folder(self.corpus.parent)
        atomic_write(self.corpus / MASTER_MANIFEST, dumps(self.master_manifest()), durable=False)
        self.synced.add(self.corpus / MASTER_MANIFEST)


def merged_into(entries: list[dict[str, Any]], merges: Mapping[str, MergeInEffect], adopted: dict[str, Any]) -> None:
    """Each entry of the master manifest's merged[] gains `into`: the faceset it was merged into, by the merge
    decision (with its id and check), or as the adopted master manifest of the batch scripts said."""
    said = {m.get("faceset") or m.get("name"): m.get("into") or m.get("merged_into")
            for m in adopted.get("merged") or () if isinstance(m, dict)}
    for e in entries:
        merge = merges.get(e["name"])
        if merge is not None:
            e["into"], e["decision"], e["check"] = merge.into, merge.decision, "merge"
        elif isinstance(said.get(e["name"]), str):
            e["into"] = said[e["name"]]
