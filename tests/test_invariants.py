"""The invariant checker itself (tests/invariants.py): silent on a sound data folder, loud on each kind of
breakage the soak test relies on it to see."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from corpus_factory import batch_corpus
from helpers import cli
from invariants import log_check_clean, log_gapless, manifest_entries_exist, photos_accounted_once, rebuild_identical

from state import events as ev
from state.eventlog import EventLog


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A batch corpus adopted by the real `facesetd reconcile` (no models needed: no photo in the inbox)."""
    d = tmp_path / "data"
    batch_corpus(d / "corpus")
    cli(d, "reconcile")
    return d


def _photo(inbox: Path, rel: str, body: bytes) -> str:
    (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
    (inbox / rel).write_bytes(body)
    return hashlib.sha256(body).hexdigest()


def _record(data: Path, *events: ev.Event) -> None:
    log = EventLog(data / "state" / "events.sqlite3")
    try:
        log.append(list(events))
    finally:
        log.close()


def test_a_sound_folder_passes_every_check(data: Path) -> None:
    assert manifest_entries_exist(data) == []
    assert photos_accounted_once(data, []) == []
    assert log_gapless(data) == []
    assert log_check_clean(data) == []
    assert rebuild_identical(data) == []


def test_a_manifest_listing_a_missing_file_is_reported(data: Path) -> None:
    (data / "corpus/faceset_002/faces/0001.png").unlink()  # by hand, with no daemon to notice
    (data / "corpus/faceset_001/faces/_dropped/0099.png").unlink()
    problems = manifest_entries_exist(data)
    assert any("faceset_002/manifest.json lists faces/0001.png" in p for p in problems), problems
    assert any("faceset_001/manifest.json lists dropped faces/_dropped/0099.png" in p for p in problems), problems


def test_an_fsz_whose_count_differs_and_a_master_entry_without_its_folder_are_reported(data: Path) -> None:
    shutil.copy(data / "corpus/faceset_002/faceset_002.fsz", data / "corpus/faceset_003/faceset_003.fsz")
    shutil.move(data / "corpus/_masked/faceset_004", data / "corpus/faceset_004")  # the master still says masked
    problems = manifest_entries_exist(data)
    assert "faceset_003/faceset_003.fsz: 3 members, the manifest says 6" in problems, problems
    assert any("lists faceset_004 in masked[], but _masked/faceset_004/ does not exist" in p for p in problems)


def test_a_photo_in_two_places_is_reported(data: Path) -> None:
    inbox = data / "inbox"
    sha = _photo(inbox, "_processed/a.jpg", b"jpeg bytes of a")
    _photo(inbox, "_rejected/unreadable/a.jpg", b"jpeg bytes of a")
    _record(data, ev.PhotoReceived(path="a.jpg", sha256=sha, size=15),
            ev.PhotoProcessed(path="a.jpg", sha256=sha, dest="_processed/a.jpg"))
    problems = photos_accounted_once(data, [sha])
    assert any(p.startswith(f"photo {sha[:12]} dropped 1x is in 2 places") for p in problems), problems
    assert "inbox/_rejected/unreadable/a.jpg is in _rejected/ but no event put it there" in problems


def test_a_photo_left_behind_a_reception_never_finished_and_a_lying_event_are_reported(data: Path) -> None:
    inbox = data / "inbox"
    waiting = _photo(inbox, "w.jpg", b"still here")
    kept = _photo(inbox, "_processed/half.jpg", b"the whole photo, written after the daemon looked")
    half = hashlib.sha256(b"the whole").hexdigest()
    _record(data, ev.PhotoReceived(path="w.jpg", sha256=waiting, size=10),
            ev.PhotoReceived(path="half.jpg", sha256=half, size=9),
            ev.PhotoProcessed(path="half.jpg", sha256=half, dest="_processed/half.jpg"),
            ev.PhotoProcessed(path="half.jpg", sha256=half, dest="_processed/half.jpg"))
    problems = photos_accounted_once(data, [waiting, kept])
    assert any("still waits in the inbox" in p and "w.jpg" in p for p in problems), problems
    assert any("inbox/w.jpg" in p and "received 1x more than it was finished" in p for p in problems), problems
    assert any("the decision was made on other bytes" in p for p in problems), problems
    assert any("has no open photo_received (a photo finished twice?)" in p for p in problems), problems
    # ... and the same file allowed to wait is fine
    assert not [p for p in photos_accounted_once(data, [waiting], may_wait=["w.jpg"]) if "w.jpg" in p
                and "still waits" in p]


def test_a_symlink_target_changed_or_the_link_lost_is_reported(data: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"outside photo")
    (data / "inbox" / "link.jpg").symlink_to(outside)
    sha = hashlib.sha256(b"outside photo").hexdigest()
    assert any("still waits in the inbox" in p for p in photos_accounted_once(data, [], links={str(outside): sha}))
    outside.write_bytes(b"changed")
    (data / "inbox" / "link.jpg").unlink()
    problems = photos_accounted_once(data, [], links={str(outside): sha})
    assert any("is in 0 places" in p for p in problems) and any("was moved or changed" in p for p in problems)


def test_a_manifest_changed_since_the_last_render_differs_from_rebuild(data: Path) -> None:
    path = data / "corpus/faceset_001/manifest.json"
    m = json.loads(path.read_bytes())
    m["faces"] = m["faces"][:-1]
    path.write_text(json.dumps(m, indent=2))
    (data / "corpus/faceset_002/faceset_002_top8.fsz").write_bytes(b"PK not really")
    problems = rebuild_identical(data)
    assert any(p.startswith("rebuild changed faceset_001/manifest.json: line") for p in problems), problems
    assert any(p.startswith("rebuild changed faceset_002/faceset_002_top8.fsz") for p in problems), problems
    assert rebuild_identical(data) == []  # rebuild wrote them back: a second one changes nothing


@pytest.mark.damaged_log
def test_a_gap_and_an_unreadable_payload_in_the_log_are_reported(data: Path) -> None:
    conn = sqlite3.connect(data / "state" / "events.sqlite3")
    head = conn.execute("SELECT MAX(position) FROM events").fetchone()[0]
    # a name with a non-UTF-8 byte, as json.dumps writes it: a lone surrogate escape orjson refuses
    conn.execute("INSERT INTO events(position, kind, subject, time, payload) VALUES (?,?,?,?,?)",
                 (head + 2, "photo_received", "x", 0.0, json.dumps({"path": "caf\udce9.jpg"})))
    conn.commit()
    conn.close()
    problems = log_gapless(data)
    assert f"log position {head + 2} follows {head}: a gap of 1" in problems, problems
    assert any(p.startswith(f"event {head + 2} photo_received: facesetd cannot read its payload back")
               for p in problems), problems


@pytest.mark.damaged_log
def test_bytes_flipped_inside_the_log_file_are_reported(data: Path) -> None:
    path = data / "state" / "events.sqlite3"
    conn = sqlite3.connect(path)
    position, payload = conn.execute("SELECT position, payload FROM events ORDER BY position DESC LIMIT 1").fetchone()
    conn.close()  # the last connection: the WAL is folded into the file and removed
    raw = bytearray(path.read_bytes())
    at = raw.index(payload.encode())
    raw[at] ^= 0xFF  # the payload's opening brace is no longer JSON
    path.write_bytes(bytes(raw))
    problems = log_check_clean(data)
    assert len(problems) == 1 and f"is damaged at log position {position}: event {position}:" in problems[0], problems
