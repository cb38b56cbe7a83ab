"""Compare the corpus on disk with what the log knows, and say it as events.

On an unchanged corpus this only stats files: a PNG is hashed only when its size or mtime differ
from the log's record. A first scan of a corpus made by the batch scripts adopts it as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import events as ev
from . import names
from .layout import DROPPED, FACESET_RE, MASTER_MANIFEST, QUARANTINE_AREAS, faceset_dir


def sha256_file(path: Path | str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class FoundFile:
    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    events: list[ev.Event] = field(default_factory=list)
    files_seen: int = 0
    hashed: int = 0
    leftovers: list[str] = field(default_factory=list)  # our own temp files a crash left mid-write
    # (name on disk, escaped name): PNGs whose names are not UTF-8; `events` already speak of the
    # escaped names, so apply_renames() must run before they are recorded (never on a dry run).
    renames: list[tuple[str, str]] = field(default_factory=list)

    def count(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.events:
            out[e.KIND] = out.get(e.KIND, 0) + 1
        return out

    def apply_renames(self, corpus: Path) -> None:
        """Rename each PNG with a name that is not UTF-8 to its escaped name (see NameEscaped).

        A rename that fails (the file went away, the name was taken meanwhile) drops that file's events:
        the next scan looks again.
        """
        failed: set[str] = set()
        for disk, shown in self.renames:
            if not rename_in_place(corpus, disk, shown):
                failed.add(shown)
        if failed:
            self.events = [e for e in self.events if not {getattr(e, "path", ""), getattr(e, "dest", "")} & failed]
        self.renames = []


def rename_in_place(corpus: Path, disk: str, shown: str) -> bool:
    """Rename corpus/disk to corpus/shown unless something is there already; True when done."""
    target = corpus / shown
    if names.lexists(target):
        return False
    try:
        os.rename(corpus / disk, target)
    except OSError:
        return False
    return True


def free_escaped_name(corpus: Path, rel: str, taken: Container[str] = ()) -> str:
    """The escaped form of `rel` (a corpus path whose name is not UTF-8), made free: not on disk, not
    in `taken`, within NAME_MAX (name~1.png, name~2.png ... when the plain escaped name is in use)."""
    for cand in names.numbered(names.escape(rel), "~"):
        if cand not in taken and not names.lexists(corpus / cand):
            return cand
    raise AssertionError("unreachable")  # pragma: no cover - numbered() never ends


def name_escaped(disk: str, shown: str) -> ev.NameEscaped:
    """The event for renaming corpus/disk (not UTF-8) to corpus/shown."""
    return ev.NameEscaped(path=shown, root="corpus", path_hex=names.to_bytes(disk).hex())


def iter_facesets(corpus: Path) -> Iterator[tuple[str, str]]:
    """(area, faceset) for every faceset folder on disk, in sorted order."""
    try:
        top = sorted(os.scandir(corpus), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in top:
        if not entry.is_dir(follow_symlinks=False):
            continue
        if FACESET_RE.match(entry.name):
            yield "", entry.name
        elif entry.name in QUARANTINE_AREAS:
            for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if sub.is_dir(follow_symlinks=False) and FACESET_RE.match(sub.name):
                    yield entry.name, sub.name


def _pngs(folder: str, rel: str) -> list[FoundFile]:
    """Visible *.png files directly in `folder` (unsorted: callers sort what they report)."""
    out: list[FoundFile] = []
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return out
    with entries:
        for e in entries:
            name = e.name
            if name[0] != "." and name[-4:].lower() == ".png" and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                out.append(FoundFile(f"{rel}/{name}", st.st_size, st.st_mtime_ns))
    return out


def face_folders(corpus: Path, facesets: list[tuple[str, str]] | None = None) -> Iterator[tuple[str, str]]:
    """(folder on disk, its path relative to the corpus) for every faces/ and faces/_dropped/ folder."""
    for area, name in iter_facesets(corpus) if facesets is None else facesets:
        rel = f"{faceset_dir(area, name)}/faces"
        yield os.path.join(corpus, rel), rel
        yield os.path.join(corpus, rel, DROPPED), f"{rel}/{DROPPED}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {"value": data}
    except (FileNotFoundError, ValueError):
        return {}


def _adopted_sources(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """file name -> the batch manifest's entry for it (whatever keys the scripts wrote)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("faces", []) or []:
        if isinstance(entry, dict):
            ref = entry.get("file") or entry.get("png") or entry.get("name") or entry.get("path") or ""
            if ref:
                out[str(ref).split("/")[-1]] = entry
        elif isinstance(entry, str):
            out[entry.split("/")[-1]] = {"file": entry}
    return out


def _source_of(entry: dict[str, Any]) -> dict[str, Any]:
    """Normalise a batch manifest entry: the original photo where the scripts named it, plus the entry."""
    out: dict[str, Any] = {"adopted": entry}
    for key in ("source", "src", "original", "photo", "source_path"):
        if isinstance(entry.get(key), str):
            out["photo"] = entry[key]
            break
    for key in ("immich", "asset_id", "immich_asset"):
        if entry.get(key):
            out["immich"] = entry[key]
            break
    return out


def scan_corpus(
    corpus: Path,
    known: dict[str, tuple[int, int, str]],
    known_facesets: set[str],
    *,
    adopt: bool,
) -> ScanResult:
    """Events that bring the log in line with the disk. `known`: path -> (size, mtime_ns, sha256)."""
    corpus = Path(corpus)
    result = ScanResult()
    found_facesets = list(iter_facesets(corpus))
    adopted_sources = _faceset_events(corpus, found_facesets, known_facesets, adopt, result)
    walk = _walk(corpus, found_facesets, known, result)
    on_disk = _escape_odd_names(corpus, walk, known, result)
    result.files_seen = len(walk.seen)
    _changed_events(corpus, walk.changed, known, result)
    missing = {p: known[p] for p in known if p not in walk.seen}
    _new_events(corpus, sorted(walk.new, key=lambda f: f.path), on_disk, missing, adopted_sources, result)
    for p in sorted(missing):
        result.events.append(ev.FaceMissing(path=p))
    return result


@dataclass
class _Walk:
    """What one pass over the faces/ folders found, against what the log knows."""

    new: list[FoundFile] = field(default_factory=list)  # not in the log
    changed: list[FoundFile] = field(default_factory=list)  # in the log with another size or mtime
    odd: list[FoundFile] = field(default_factory=list)  # names that are not UTF-8 (escaped before recording)
    seen: set[str] = field(default_factory=set)


def _faceset_events(corpus: Path, found: list[tuple[str, str]], known_facesets: set[str], adopt: bool,
                    result: ScanResult) -> dict[str, dict[str, dict[str, Any]]]:
    """CorpusAdopted (on adoption) and FacesetCreated for facesets new to the log; returns the adopted
    manifests' per-file sources, by faceset."""
    if adopt and found:
        master = _read_json(corpus / MASTER_MANIFEST)
        result.events.append(ev.CorpusAdopted(master=master, facesets=tuple(n for _a, n in found)))
    adopted_sources: dict[str, dict[str, dict[str, Any]]] = {}
    for area, name in found:
        if name in known_facesets:
            continue
        manifest = _read_json(corpus / faceset_dir(area, name) / "manifest.json") if adopt else {}
        adopted_sources[name] = _adopted_sources(manifest)
        result.events.append(
            ev.FacesetCreated(faceset=name, area=area, reason="adopted" if adopt else "found on disk", manifest=manifest)
        )
    return adopted_sources


def _walk(corpus: Path, found: list[tuple[str, str]], known: dict[str, tuple[int, int, str]],
          result: ScanResult) -> _Walk:
    walk = _Walk()
    for folder, rel in face_folders(corpus, found):
        # The hot loop of an unchanged corpus: one stat and one dict lookup per file, nothing more.
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for e in entries:
                fname = e.name
                if fname[0] == ".":
                    if ".tmp-" in fname:
                        result.leftovers.append(f"{rel}/{fname}")
                    continue
                if fname[-4:].lower() != ".png" or not e.is_file(follow_symlinks=False):
                    continue
                path = f"{rel}/{fname}"
                st = e.stat(follow_symlinks=False)
                old = known.get(path)
                if old is None and not fname.isascii() and not names.is_exact(fname):
                    walk.odd.append(FoundFile(path, st.st_size, st.st_mtime_ns))  # never in the log: no lookup
                    continue
                walk.seen.add(path)
                if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
                    continue
                (walk.new if old is None else walk.changed).append(FoundFile(path, st.st_size, st.st_mtime_ns))
    return walk


def _escape_odd_names(corpus: Path, walk: _Walk, known: dict[str, tuple[int, int, str]],
                      result: ScanResult) -> dict[str, str]:
    """Names that are not UTF-8 cannot be recorded: they get their escaped names (renamed in place, by
    apply_renames). Returns escaped name -> name on disk."""
    on_disk: dict[str, str] = {}
    taken = walk.seen.union(known) if walk.odd else set()
    for f in sorted(walk.odd, key=lambda f: os.fsencode(f.path)):
        shown = free_escaped_name(corpus, f.path, taken=taken)
        result.renames.append((f.path, shown))
        on_disk[shown] = f.path
        walk.seen.add(shown)
        taken.add(shown)
        walk.new.append(FoundFile(shown, f.size, f.mtime_ns))
    return on_disk


def _changed_events(corpus: Path, changed: list[FoundFile], known: dict[str, tuple[int, int, str]],
                    result: ScanResult) -> None:
    """FaceTouched (same bytes, new mtime) or FaceChanged (new bytes) per changed file."""
    for f in sorted(changed, key=lambda f: f.path):
        old = known[f.path]
        sha = sha256_file(corpus / f.path)
        result.hashed += 1
        if sha == old[2]:
            result.events.append(ev.FaceTouched(path=f.path, size=f.size, mtime_ns=f.mtime_ns))
        else:
            result.events.append(ev.FaceChanged(path=f.path, sha256=sha, size=f.size, mtime_ns=f.mtime_ns))


def _new_events(corpus: Path, new: list[FoundFile], on_disk: dict[str, str],
                missing: dict[str, tuple[int, int, str]], adopted_sources: dict[str, dict[str, dict[str, Any]]],
                result: ScanResult) -> None:
    """FaceAdded per new file, or FaceMovedExternally when it holds the bytes of a missing one (which is then
    no longer missing)."""
    missing_by_sha: dict[str, list[str]] = {}
    for p, (_s, _m, sha) in sorted(missing.items()):
        missing_by_sha.setdefault(sha, []).append(p)
    for f in new:
        sha = sha256_file(corpus / on_disk.get(f.path, f.path))
        result.hashed += 1
        if f.path in on_disk:
            result.events.append(name_escaped(on_disk[f.path], f.path))
        if missing_by_sha.get(sha):
            old_path = missing_by_sha[sha].pop(0)
            del missing[old_path]
            result.events.append(
                ev.FaceMovedExternally(path=old_path, dest=f.path, size=f.size, mtime_ns=f.mtime_ns)
            )
            continue
        faceset = f.path.split("/faces/")[0].split("/")[-1]
        source = adopted_sources.get(faceset, {}).get(f.path.split("/")[-1])
        result.events.append(
            ev.FaceAdded(
                path=f.path, sha256=sha, size=f.size, mtime_ns=f.mtime_ns,
                source=_source_of(source) if source else {},
            )
        )
