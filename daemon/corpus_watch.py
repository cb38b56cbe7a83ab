"""Turn what the watcher saw in the corpus into log events, checked against the corpus state.

Our own moves and writes come back from the watcher too; they are recognised because the state
already records them (a decision is applied before its files move, and the daemon carries out pending
moves before it reads a batch of reports), and produce nothing. A report is a hint, not a fact: what
counts is the disk when the report is read, so a report about a path that is gone by then says nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from state import events as ev
from state import names
from state.corpus_state import CorpusState
from state.layout import parse_face_path
from state.scan import free_escaped_name, name_escaped, rename_in_place, sha256_file

from .watcher import FileDeleted, FileMoved, FileReady, WatchEvent


def _row(state: CorpusState, rel: str) -> tuple[int, int, str] | None:
    return state.face_stat(rel)


def _rel(corpus: Path, path: Path) -> str | None:
    try:
        return path.relative_to(corpus).as_posix()
    except ValueError:
        return None


def _ready(state: CorpusState, corpus: Path, rel: str, known_facesets: set[str]) -> list[ev.Event]:
    fp = parse_face_path(rel)
    if fp is None:
        return []  # manifests, .fsz files, placeholders: not faces
    try:
        st = (corpus / rel).stat()
    except FileNotFoundError:
        return []
    old = _row(state, rel)
    if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
        return []
    sha = sha256_file(corpus / rel)
    if old is not None:
        if sha == old[2]:
            return [ev.FaceTouched(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)]
        return [ev.FaceChanged(path=rel, sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns)]
    out: list[ev.Event] = []
    if fp.faceset not in known_facesets:
        out.append(ev.FacesetCreated(faceset=fp.faceset, area=fp.area, reason="found on disk"))
        known_facesets.add(fp.faceset)
    out.append(ev.FaceAdded(path=rel, sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns))
    return out


def _escape_in_place(corpus: Path, rel: str) -> tuple[str, list[ev.Event]] | None:
    """A face PNG whose name is not UTF-8 cannot be recorded: rename it to its escaped name (recorded as
    NameEscaped, with the exact bytes). Returns (the new path, that event); None when it is not a face
    PNG or the rename failed (the next scan looks again)."""
    if parse_face_path(names.escape(rel)) is None:
        return None
    shown = free_escaped_name(corpus, rel)
    if not rename_in_place(corpus, rel, shown):
        return None
    return shown, [name_escaped(rel, shown)]


def corpus_events(state: CorpusState, corpus: Path, seen: Sequence[WatchEvent]) -> list[ev.Event]:
    """Events for a batch of watcher reports under the corpus (in the order they came)."""
    state.catch_up()
    known_facesets = {n for n, _a in state.facesets()}
    out: list[ev.Event] = []
    for w in seen:
        if isinstance(w, FileReady):
            out.extend(_file_ready(state, corpus, w, known_facesets))
        elif isinstance(w, FileMoved):
            out.extend(_file_moved(state, corpus, w, known_facesets))
        elif isinstance(w, FileDeleted):
            rel = _rel(corpus, w.path)
            if rel and names.is_exact(rel) and _row(state, rel) is not None and not w.path.exists():
                out.append(ev.FaceMissing(path=rel))
    return out


def _file_ready(state: CorpusState, corpus: Path, w: FileReady, known_facesets: set[str]) -> list[ev.Event]:
    out: list[ev.Event] = []
    rel = _rel(corpus, w.path)
    if rel and not names.is_exact(rel):
        escaped = _escape_in_place(corpus, rel)
        if escaped is None:
            return []
        rel, renamed = escaped
        out.extend(renamed)
    if rel:
        out.extend(_ready(state, corpus, rel, known_facesets))
    return out


def _file_moved(state: CorpusState, corpus: Path, w: FileMoved, known_facesets: set[str]) -> list[ev.Event]:
    out: list[ev.Event] = []
    src, dest = _rel(corpus, w.src), _rel(corpus, w.dest)
    if src and not names.is_exact(src):
        src = None  # never recorded under a name that is not UTF-8
    if dest and not names.is_exact(dest):  # renamed by hand to such a name
        escaped = _escape_in_place(corpus, dest)
        if escaped is None:
            return []
        dest, renamed = escaped
        out.extend(renamed)
        w = FileMoved(w.src, corpus / dest, w.root)
    if dest and _row(state, dest) is not None:
        return out  # a move the log already records (ours)
    if src and _row(state, src) is not None:
        if not w.src.exists():  # (still there: a report that came late, nothing changed)
            out.append(_moved_away(src, dest, w.dest))
    elif dest:
        out.extend(_ready(state, corpus, dest, known_facesets))
    return out


def _moved_away(src: str, dest: str | None, dest_path: Path) -> ev.Event:
    """A recorded face moved by hand: to another faceset's faces/ (moved), or anywhere else (missing)."""
    try:
        st = dest_path.stat() if dest and parse_face_path(dest) is not None else None
    except FileNotFoundError:  # moved on since: the scan of a later report, or reconcile, says where
        st = None
    if st is not None and dest:
        return ev.FaceMovedExternally(path=src, dest=dest, size=st.st_size, mtime_ns=st.st_mtime_ns)
    return ev.FaceMissing(path=src)
