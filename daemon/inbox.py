"""The inbox: photos users drop in, turned into PhotoReceived events for the router.

    inbox/*.jpg ...               any photo: its faces are routed to their identity or pooled
    inbox/faceset_NNN/*.jpg       forces identity faceset_NNN (and creates it): how a user seeds a person
    inbox/_processed/             photos whose faces were routed (moved here, never deleted)
    inbox/_rejected/<reason>/     files that are not readable photos

The scan hashes what it finds (the inbox empties itself, so this stays small) and skips files already
received and not yet handled, so a scan during processing, or after a crash, never records a photo twice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from state import events as ev
from state.layout import FACESET_RE
from state.scan import sha256_file

if TYPE_CHECKING:
    from .pipeline import Pipeline

log = structlog.get_logger("facesetd.inbox")

PROCESSED = "_processed"
REJECTED = "_rejected"
# Names that are not photos yet: partial downloads, editors' temp files, our own atomic-write temps.
TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".download", "~")


def is_candidate(rel: str) -> bool:
    """Whether an inbox-relative path is a photo to receive (not processed, rejected, hidden or temporary)."""
    parts = rel.split("/")
    if parts[0] in (PROCESSED, REJECTED):
        return False
    if any(p.startswith(".") for p in parts):
        return False
    name = parts[-1].lower()
    return ".tmp-" not in name and not name.endswith(TEMP_SUFFIXES)


def forced_faceset(rel: str) -> str:
    """inbox/faceset_NNN/... forces that identity; anything else is routed by similarity."""
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 and FACESET_RE.match(parts[0]) else ""


def taken_at(path: Path) -> str | None:
    """The EXIF capture date as an ISO date (YYYY-MM-DD), when the photo has one."""
    try:
        from gpu_agent.image_header import header_exif, open_header

        with open_header(path) as im:  # the header only: a date is not worth decoding a (maybe huge) image
            exif = header_exif(im)
            raw = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, else DateTime
    except Exception:  # noqa: BLE001 - no EXIF, or not an image at all: the router will say so
        return None
    if not isinstance(raw, str) or len(raw) < 10:
        return None
    date = raw[:10].replace(":", "-")
    return date if date[:4].isdigit() and date[4] == "-" else None


def _pending(pipeline: Pipeline, root: str) -> set[tuple[str, str]]:
    rows = pipeline.state.query("SELECT path, sha256 FROM photos WHERE root=? AND state='received'", (root,))
    return {(p, s) for p, s in rows}


def photo_event(root_dir: Path, rel: str, root: str = "inbox", provenance: dict[str, Any] | None = None
                ) -> ev.PhotoReceived:
    """The PhotoReceived for one file (hashes it)."""
    path = root_dir / rel
    prov: dict[str, Any] = {"photo": f"{root}/{rel}"} if provenance is None else dict(provenance)
    if "taken_at" not in prov:
        date = taken_at(path)
        if date:
            prov["taken_at"] = date
    return ev.PhotoReceived(
        path=rel, root=root, sha256=sha256_file(path), size=path.stat().st_size,
        forced_faceset=forced_faceset(rel) if root == "inbox" else "", provenance=prov,
    )


def scan_inbox(pipeline: Pipeline) -> list[ev.Event]:
    """PhotoReceived for every photo in the inbox not yet received (a `Pipeline.scanners` entry)."""
    inbox = pipeline.config.inbox_dir
    if not inbox.is_dir():
        return []
    pipeline.state.catch_up()
    pending = _pending(pipeline, "inbox")
    out: list[ev.Event] = []
    for dirpath, dirnames, filenames in os.walk(inbox):
        rel_dir = os.path.relpath(dirpath, inbox)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if is_candidate(rel_dir + d))
        for name in sorted(filenames):
            rel = rel_dir + name
            if not is_candidate(rel) or not os.path.isfile(os.path.join(dirpath, name)):
                continue
            try:
                event = photo_event(inbox, rel)
            except OSError as e:  # vanished or unreadable while we looked: the next scan retries
                log.warning("inbox file skipped", path=rel, error=str(e))
                continue
            if (event.path, event.sha256) in pending:
                continue
            pending.add((event.path, event.sha256))
            out.append(event)
    # Seeds (inbox/faceset_NNN/) first: the rest of the same drop can then route to them.
    out.sort(key=lambda e: not e.forced_faceset)  # type: ignore[attr-defined]
    return out


def list_waiting(inbox: Path) -> list[str]:
    """Inbox-relative paths of the photos waiting in the inbox, not hashed: seeds (inbox/faceset_NNN/) first,
    then by name. The order photos are received in."""
    if not inbox.is_dir():
        return []
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(inbox):
        rel_dir = os.path.relpath(dirpath, inbox)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if is_candidate(rel_dir + d))
        out.extend(rel_dir + n for n in filenames if is_candidate(rel_dir + n))
    return sorted(out, key=lambda rel: (not forced_faceset(rel), rel))


def receive(pipeline: Pipeline, path: Path) -> int | None:
    """Record one photo the watcher saw; returns its event position, or None when skipped or known."""
    inbox = pipeline.config.inbox_dir
    try:
        rel = Path(path).resolve().relative_to(inbox.resolve()).as_posix()
    except ValueError:
        return None
    if not is_candidate(rel) or not (inbox / rel).is_file():
        return None
    pipeline.state.catch_up()
    event = photo_event(inbox, rel)
    if pipeline.state.photo_waiting("inbox", event.path, event.sha256):
        return None  # received and not yet handled, or deferred (daemon.deferred retries it)
    (position,) = pipeline.log.append([event])
    return position
