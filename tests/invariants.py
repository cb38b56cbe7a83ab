"""Invariants any test can check on a facesetd data folder (data/corpus, data/inbox, data/state).

Each check returns a list of human-readable problems; an empty list means the invariant holds, so one
`assert not problems, "\n".join(problems)` prints every broken promise at once. The checks read the
disk and the event log directly (read-only SQLite, stdlib JSON), never through facesetd's own code, so
a bug in a projection cannot hide itself; only `rebuild_identical` runs facesetd (the real CLI).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AREAS = {"facesets": "", "masked": "_masked", "merged": "_merged", "thin": "_thin"}
PROCESSED, REJECTED = "_processed", "_rejected"
# The events that close a received photo. `photo_deferred` (a half-written file put back to wait) is
# another developer's planned kind: it closes this reception, and the completed file is received again.
FINAL_PHOTO_KINDS = ("photo_processed", "photo_rejected", "photo_deferred")


# --- Reading ------------------------------------------------------------------------------------------


def read_events(data: Path) -> list[dict[str, Any]]:
    """Every event of data/state/events.sqlite3 as {position, kind, subject, **payload} (read-only).

    The stdlib JSON decoder is used on purpose: it accepts the lone-surrogate escapes a non-UTF-8 file
    name produces, so such an event is still read (and judged) instead of stopping the check."""
    path = data / "state" / "events.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT position, kind, subject, payload FROM events ORDER BY position").fetchall()
    finally:
        conn.close()
    out = []
    for pos, kind, subject, payload in rows:
        try:
            body = json.loads(payload)
        except ValueError as e:  # reported by log_gapless; keep going with what the row says
            body = {"_undecodable": str(e)}
        out.append({"position": pos, "kind": kind, "subject": subject, **body})
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _show(rel: str) -> str:
    """A path as text a terminal can print (non-UTF-8 bytes escaped)."""
    return ascii(rel)[1:-1] if not rel.isprintable() or any(0xDC80 <= ord(c) <= 0xDCFF for c in rel) else rel


def _faceset_folders(corpus: Path) -> list[tuple[str, str, Path]]:
    """(area, name, folder) of every faceset folder on disk, active and quarantined."""
    found = []
    for area in AREAS.values():
        base = corpus / area if area else corpus
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            if folder.is_dir() and folder.name.startswith("faceset_"):
                found.append((area, folder.name, folder))
    return found


# --- Projections ----------------------------------------------------------------------------------------


def _fsz_members(path: Path) -> int | str:
    try:
        with zipfile.ZipFile(path) as z:
            return len(z.namelist())
    except (OSError, zipfile.BadZipFile) as e:
        return f"unreadable ({e})"


def _check_faceset_manifest(corpus: Path, area: str, name: str, folder: Path) -> list[str]:
    where = f"{area + '/' if area else ''}{name}"
    mpath = folder / "manifest.json"
    if not mpath.exists():
        return []  # a faceset whose projections are not written yet (or a batch corpus not adopted)
    try:
        m = json.loads(mpath.read_bytes())
    except ValueError as e:
        return [f"{where}/manifest.json is not JSON: {e}"]
    if "faces" not in m or "fsz" not in m:
        return []  # a manifest the batch scripts wrote, not yet rendered by facesetd
    faces_dir = folder / "faces"
    problems = [f"{where}/manifest.json lists {what}{_show(entry['file'])}, which is not on disk"
                for key, base, what in (("faces", faces_dir, "faces/"), ("dropped", faces_dir, "dropped faces/"),
                                        ("slotted", corpus, "slotted "))
                for entry in m.get(key, []) if not (base / entry["file"]).is_file()]
    fsz = m["fsz"]
    expected = {fsz.get("full"): len(m.get("faces", [])) + len(m.get("slotted", [])),
                fsz.get("top"): len(fsz.get("top_files", []))}
    for fname, want in expected.items():
        if not fname:
            continue
        got = _fsz_members(folder / fname) if (folder / fname).exists() else "missing"
        if got != want:
            problems.append(f"{where}/{fname}: {got} members, the manifest says {want}")
    return problems


def manifest_entries_exist(data: Path) -> list[str]:
    """Every file every per-faceset manifest lists exists; each .fsz holds as many members as its manifest
    says; the master manifest lists only facesets whose folder exists in the area it states."""
    corpus = Path(data) / "corpus"
    problems: list[str] = []
    for area, name, folder in _faceset_folders(corpus):
        problems += _check_faceset_manifest(corpus, area, name, folder)
    master = corpus / "manifest.json"
    if master.exists():
        try:
            mm = json.loads(master.read_bytes())
        except ValueError as e:
            return problems + [f"corpus/manifest.json is not JSON: {e}"]
        for key, area in AREAS.items():
            for entry in mm.get(key, []) if "provenance" in mm else []:
                name = entry.get("name") if isinstance(entry, dict) else entry
                folder = corpus / area / name if area else corpus / name
                if not folder.is_dir():
                    problems.append(f"corpus/manifest.json lists {name} in {key}[], but {folder.relative_to(corpus)}/"
                                    " does not exist")
    return problems


# --- Photos -------------------------------------------------------------------------------------------


def _inbox_files(inbox: Path) -> dict[str, list[str]]:
    """sha256 -> inbox-relative paths of every regular file (not symlink) under the inbox."""
    out: dict[str, list[str]] = defaultdict(list)
    if not inbox.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(inbox):
        for fname in files:
            p = Path(dirpath) / fname
            if p.is_symlink() or not p.is_file():
                continue
            out[sha256_file(p)].append(p.relative_to(inbox).as_posix())
    return out


def inbox_links(inbox: Path) -> dict[str, list[str]]:
    """link target (as written) -> inbox-relative paths of every symlink under the inbox."""
    out: dict[str, list[str]] = defaultdict(list)
    if not inbox.is_dir():
        return out
    for dirpath, dirs, files in os.walk(inbox):
        for fname in files + dirs:
            p = Path(dirpath) / fname
            if p.is_symlink():
                out[os.readlink(p)].append(p.relative_to(inbox).as_posix())
    return out


def _place(rel: str) -> str:
    top = rel.split("/", 1)[0]
    return top if top in (PROCESSED, REJECTED) else "inbox"


def _dest_problems(e: dict[str, Any], key: tuple[str, str, str], path: Path, dest: str,
                   moved_away: set[str]) -> list[str]:
    """A final event's dest holds the bytes it names (or was moved away by the test). A file recorded unread (too
    large: no sha256) or that is not a regular file (a FIFO, a socket, a device: never opened) only has to be there."""
    if path.is_file() and not path.is_symlink() and key[2]:
        got = sha256_file(path)
        if got != key[2]:
            return [f"event {e['position']} {e['kind']} says {_show(key[1])} had sha256 {key[2][:12]} but"
                    f" {_show(dest)} holds {got[:12]}: the decision was made on other bytes than the ones kept"]
    elif not os.path.lexists(path) and dest not in moved_away:
        return [f"event {e['position']} {e['kind']}: its dest {_show(dest)} is not on disk"]
    return []


def _log_problems(events: list[dict[str, Any]], inbox: Path, may_wait: set[str],
                  moved_away: set[str]) -> list[str]:
    """One final event per reception, in order; every final dest holds the bytes the event names."""
    problems = []
    open_: Counter[tuple[str, str, str]] = Counter()
    dests: set[str] = set()
    # `facesetd retry` moved these back into the inbox (a dead letter's photo): received anew from there
    moved_away = moved_away | {m[0] for e in events if e["kind"] == "dead_letter_retried" for m in e.get("moves", ())}
    for e in events:
        if e["kind"] == "photo_received":
            open_[(e.get("root", "inbox"), e.get("path", ""), e.get("sha256", ""))] += 1
        elif e["kind"] in FINAL_PHOTO_KINDS:
            key = (e.get("root", "inbox"), e.get("path", ""), e.get("sha256", ""))
            if open_[key] <= 0:
                problems.append(f"event {e['position']} {e['kind']} for {_show(key[1])} has no open photo_received"
                                " (a photo finished twice?)")
            else:
                open_[key] -= 1
            dest = e.get("dest") or ""
            if dest and e.get("root", "inbox") == "inbox":
                dests.add(dest)
                problems += _dest_problems(e, key, inbox / dest, dest, moved_away)
    for (root, path, sha), n in sorted(open_.items()):
        if n > 0 and path not in may_wait:
            problems.append(f"{root}/{_show(path)} (sha256 {sha[:12]}) was received {n}x more than it was finished")
    for sha_paths in _inbox_files(inbox).values():
        for rel in sha_paths:
            if _place(rel) != "inbox" and rel not in dests:
                problems.append(f"inbox/{_show(rel)} is in {_place(rel)}/ but no event put it there")
    return problems


def photos_accounted_once(
    data: Path,
    dropped: Iterable[str] | Mapping[str, Any],
    may_wait: Iterable[str] = (),
    links: Mapping[str, str | None] | None = None,
    moved_away: Iterable[str] = (),
) -> list[str]:
    """Every photo the test dropped is in exactly one place, and the log finished each reception once.

    dropped: the sha256 of every drop, once per drop (the same bytes dropped twice are two photos).
    may_wait: inbox-relative paths that may still sit in the inbox (e.g. a file the test left half written).
    links: symlinks the test made in the inbox, target string -> sha256 of the target's bytes at the time
      (None when dangling): each must end up exactly once in the inbox tree (in the inbox itself only when
      dangling), and its target must be unchanged.
    moved_away: inbox-relative paths the test moved out by hand (a rejected file put back into the inbox),
      so events whose dest is one of them are not expected to find it.
    Call it when the daemon is idle; it reads the disk and the log only."""
    data = Path(data)
    inbox = data / "inbox"
    events = read_events(data)
    # A photo deferred because it does not decode yet waits in the inbox for its writer, by design; one whose folder
    # does not let facesetd move it is handled where it is.
    wait = set(may_wait) | deferred_paths(events) | left_paths(events)
    counts = Counter(dropped)
    problems: list[str] = []
    files = _inbox_files(inbox)
    for sha, n in sorted(counts.items()):
        where = files.get(sha, [])
        stuck = [r for r in where if _place(r) == "inbox" and r not in wait]
        if len(where) != n:
            problems.append(f"photo {sha[:12]} dropped {n}x is in {len(where)} places: "
                            + (", ".join(_show(r) for r in sorted(where)) or "nowhere"))
        elif stuck:
            problems.append(f"photo {sha[:12]} still waits in the inbox after idle: "
                            + ", ".join(_show(r) for r in stuck))
    found_links = inbox_links(inbox)
    for target, sha in sorted((links or {}).items()):
        where = found_links.get(target, [])
        if len(where) != 1:
            problems.append(f"symlink -> {target} is in {len(where)} places: {', '.join(map(_show, where)) or 'nowhere'}")
        elif sha is not None and _place(where[0]) == "inbox" and where[0] not in wait:
            problems.append(f"symlink inbox/{_show(where[0])} -> {target} still waits in the inbox after idle")
        if sha is not None and (not os.path.isfile(target) or sha256_file(Path(target)) != sha):
            problems.append(f"the target of a symlink, {target}, was moved or changed")
    problems += _log_problems(events, inbox, wait, set(moved_away))
    return problems


def deferred_paths(events: list[dict[str, Any]]) -> set[str]:
    """Inbox paths whose latest photo event is `photo_deferred`: left in place, waiting for their writer."""
    last: dict[str, str] = {}
    for e in events:
        if e["kind"].startswith("photo_") and e.get("root", "inbox") == "inbox":
            last[e.get("path", "")] = e["kind"]
    return {path for path, kind in last.items() if kind == "photo_deferred"}


def left_paths(events: list[dict[str, Any]]) -> set[str]:
    """Inbox paths whose latest final event says the photo was left where it was received (`left`: its folder
    does not let facesetd move it)."""
    last: dict[str, str] = {}
    for e in events:
        if e["kind"] in FINAL_PHOTO_KINDS and e.get("root", "inbox") == "inbox":
            last[e.get("path", "")] = e.get("left", "")
    return {path for path, left in last.items() if left}


# --- The log -------------------------------------------------------------------------------------------


def log_gapless(data: Path) -> list[str]:
    """Positions run 1..N without a gap, and every payload is JSON facesetd itself can decode."""
    events = read_events(Path(data))
    problems = []
    for i, e in enumerate(events, start=1):
        if e["position"] != i:
            problems.append(f"log position {e['position']} follows {i - 1}: a gap of {e['position'] - i}")
            break
    for e in events:
        if "_undecodable" in e:
            problems.append(f"event {e['position']} {e['kind']}: payload is not JSON ({e['_undecodable']})")
    path = Path(data) / "state" / "events.sqlite3"
    if path.exists():  # what facesetd's own decoder (orjson, strict UTF-8) makes of every payload
        import orjson

        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            for pos, kind, payload in conn.execute("SELECT position, kind, payload FROM events ORDER BY position"):
                try:
                    orjson.loads(payload)
                except orjson.JSONDecodeError as err:
                    problems.append(f"event {pos} {kind}: facesetd cannot read its payload back ({err})")
        finally:
            conn.close()
    return problems


def log_check_clean(data: Path) -> list[str]:
    """facesetd's own integrity check of the event log (state/logcheck.py: SQLite's quick_check, every event read
    back) finds nothing in any *.sqlite3 under `data` (its state/events.sqlite3, or a log a test made elsewhere).
    Unlike the checks above this one runs facesetd's code, on purpose: what it holds is that the check never cries
    damage over a log facesetd wrote (a false alarm would stop the daemon)."""
    from state.logcheck import check_log

    problems = []
    for path in sorted(Path(data).rglob("*.sqlite3")):
        damage = check_log(path).damage
        if damage is not None:
            problems.append(damage.line())
    return problems


# --- Rebuild ----------------------------------------------------------------------------------------------


def projection_bytes(corpus: Path) -> dict[str, bytes]:
    """Every manifest.json and .fsz under the corpus (the pool and inbox have none), by relative path."""
    return {
        p.relative_to(corpus).as_posix(): p.read_bytes()
        for p in sorted(Path(corpus).rglob("*"))
        if p.is_file() and (p.name == "manifest.json" or p.suffix == ".fsz")
    }


def rebuild_identical(data: Path, env: Mapping[str, str] | None = None, timeout: float = 300) -> list[str]:
    """Run `facesetd --data-dir D rebuild` (the daemon must be stopped) and compare every manifest and .fsz
    byte for byte with what was there before; returns the differences."""
    corpus = Path(data) / "corpus"
    before = projection_bytes(corpus)
    full_env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "rebuild"],
                          capture_output=True, text=True, env=full_env, cwd=REPO, timeout=timeout)
    if proc.returncode != 0:
        return [f"facesetd rebuild exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-2000:]}"]
    after = projection_bytes(corpus)
    problems = []
    for rel in sorted(set(before) | set(after)):
        a, b = before.get(rel), after.get(rel)
        if a == b:
            continue
        if a is None:
            problems.append(f"rebuild wrote {rel}, which the daemon had not")
        elif b is None:
            problems.append(f"rebuild removed {rel}")  # pragma: no cover - rebuild never removes files
        else:
            problems.append(f"rebuild changed {rel}: {_first_difference(rel, a, b)}")
    return problems


def _first_difference(rel: str, a: bytes, b: bytes) -> str:
    if rel.endswith(".json"):
        la, lb = a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines()
        for i, (x, y) in enumerate(zip(la, lb), start=1):
            if x != y:
                return f"line {i}: {x.strip()!r} -> {y.strip()!r}"
        return f"{len(la)} lines -> {len(lb)} lines"
    return f"{len(a)} bytes -> {len(b)} bytes"
