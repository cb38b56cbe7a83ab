"""Odd names and links in the inbox and the corpus: recorded losslessly, handled, and the daemon lives on.

Names are bytes on Linux. A name that is not UTF-8 is kept in events as its escaped form (valid UTF-8)
plus its exact bytes; a name of 255 bytes must still get free names beside it; a symbolic link is
followed only to a regular file inside the data folder, else the LINK is moved aside with a reason.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess
from helpers import cli, open_pipeline
from PIL import Image

RAW = b"latin1_\xe9t\xe9.jpg"  # the exact name from the issue (Latin-1 bytes, not UTF-8)
SHOWN = "latin1_\\xe9t\\xe9.jpg"  # its escaped form in events and in _processed/
LONG = "L" * 251 + ".jpg"  # 255 bytes: NAME_MAX
NAME_MAX = 255


def _env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_WATCH_SETTLE_S": "0.5"}


def raw(folder: Path, name: bytes) -> Path:
    """The path of a file named with these exact bytes."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def names_in(folder: Path) -> list[bytes]:
    return sorted(os.fsencode(p.name) for p in folder.iterdir()) if folder.is_dir() else []


def evs(data: Path, env: dict[str, str] | None = None) -> list[dict]:
    out = cli(data, "events", "--json", env=env).stdout.splitlines()
    return [{"kind": e["kind"], **e["payload"]} for e in map(json.loads, out)]


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


def _alive(d: DaemonProcess) -> None:
    assert d.proc is not None and d.proc.poll() is None, d.output()[-3000:]


# --- 1. a name that is not UTF-8 --------------------------------------------------------------------


def test_non_utf8_name_through_the_daemon_then_a_restart(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data, _env(models_root)).start()
    inbox = data / "inbox"
    shutil.copy(faces_dir / "identities/obama/obama.jpg", raw(inbox, RAW))
    d.wait_for(lambda: "photo_processed" in d.kinds(), "the photo with a Latin-1 name processed")
    _alive(d)
    (received,) = [e for e in d.events() if e["kind"] == "photo_received"]
    assert received["path"] == SHOWN and bytes.fromhex(received["path_hex"]) == RAW
    assert received["provenance"]["photo"] == f"inbox/{SHOWN}"
    assert names_in(inbox / "_processed") == [SHOWN.encode()]
    assert RAW not in names_in(inbox)
    assert d.terminate() == 0
    # dropped while it was down: the startup scan takes it (this crashed every restart before)
    shutil.copy(faces_dir / "identities/biden/biden.jpg", raw(inbox, b"second_\xff\xfe.jpg"))
    d2 = DaemonProcess(data, _env(models_root)).start()
    d2.wait_for(lambda: d2.kinds().count("photo_processed") == 2, "the second odd name processed")
    _alive(d2)
    assert d2.terminate() == 0
    assert names_in(inbox / "_processed") == sorted([SHOWN.encode(), b"second_\\xff\\xfe.jpg"])
    assert "Traceback" not in d.output() + d2.output()


def test_non_utf8_name_through_reconcile(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    shutil.copy(faces_dir / "identities/obama/obama.jpg", raw(inbox, RAW))
    env = _env(models_root)
    cli(data, "reconcile", env=env)
    events = evs(data, env)
    (done,) = of(events, "photo_processed")
    assert done["path"] == SHOWN and done["dest"] == f"_processed/{SHOWN}" and len(done["faces"]) == 1
    assert (inbox / "_processed" / SHOWN).is_file() and RAW not in names_in(inbox)
    # the crop (in the pool: no faceset yet) names its photo by the escaped name
    (pooled,) = of(events, "pool_face_added")
    assert pooled["source"]["photo"] == f"_processed/{SHOWN}" and pooled["source"]["received_as"] == f"inbox/{SHOWN}"
    cli(data, "reconcile", env=env)
    assert len(evs(data, env)) == len(events)


# --- 2. 255-byte names ------------------------------------------------------------------------------


def test_two_photos_under_one_255_byte_name(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    env = _env(models_root)
    shutil.copy(faces_dir / "identities/obama/obama.jpg", inbox / LONG)
    cli(data, "reconcile", env=env)
    shutil.copy(faces_dir / "identities/biden/biden.jpg", inbox / LONG)
    cli(data, "reconcile", env=env)  # Errno 36 for LLL..._1.jpg before
    kept = names_in(inbox / "_processed")
    assert len(kept) == 2 and all(len(n) <= NAME_MAX for n in kept), kept
    # the same with a name of 255 bytes that is 1008 once escaped
    escaped_long = b"\xe9" * 251 + b".jpg"
    shutil.copy(faces_dir / "identities/obama/obama1.jpg", raw(inbox, escaped_long))
    cli(data, "reconcile", env=env)
    shutil.copy(faces_dir / "identities/biden/biden2.jpg", raw(inbox, escaped_long))
    cli(data, "reconcile", env=env)
    events = evs(data, env)
    done = of(events, "photo_processed")
    assert len(done) == 4 and not of(events, "photo_rejected")
    assert len({e["dest"] for e in done}) == 4
    kept = names_in(inbox / "_processed")
    assert len(kept) == 4 and all(len(n) <= NAME_MAX for n in kept), kept
    assert names_in(inbox) == [b"_processed"]
    # every crop written is recorded (the crash left one written with no event)
    pooled = {e["path"] for e in of(events, "pool_face_added")}
    assert len(pooled) == 4
    assert {p.relative_to(data / "corpus").as_posix() for p in (data / "corpus").rglob("*.png")} == pooled


def test_dropped_names_fit_name_max(tmp_path: Path) -> None:
    from handlers.common import dropped_dest

    pipeline = open_pipeline(tmp_path / "data")
    faces = pipeline.config.corpus_dir / "faceset_001/faces"
    (faces / "_dropped").mkdir(parents=True)
    name = "P" * 251 + ".png"
    (faces / name).write_bytes(b"a")
    (faces / "_dropped" / name).write_bytes(b"b")
    dest = dropped_dest(pipeline.ctx, f"faceset_001/faces/{name}")
    last = dest.rsplit("/", 1)[1]
    assert len(last.encode()) <= NAME_MAX and last.endswith("~2.png") and dest.startswith("faceset_001/faces/_dropped/")


# --- 10. links and finished downloads ---------------------------------------------------------------


def _links(tmp_path: Path, data: Path, faces_dir: Path) -> dict[str, Path]:
    """inside -> a photo elsewhere in the data folder; outside, dangling and a folder: rejected."""
    inbox = data / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    library = data / "library"
    library.mkdir(parents=True, exist_ok=True)
    shutil.copy(faces_dir / "identities/obama/obama.jpg", library / "obama.jpg")
    outside = tmp_path / "outside.jpg"
    shutil.copy(faces_dir / "identities/biden/biden.jpg", outside)
    return {"inside.jpg": library / "obama.jpg", "outside.jpg": outside,
            "dangling.jpg": tmp_path / "nothing.jpg", "folder.jpg": library}


def _check_links(data: Path, targets: dict[str, Path], events: list[dict], faces_dir: Path) -> None:
    inbox = data / "inbox"
    (done,) = of(events, "photo_processed")
    assert done["path"] == "inside.jpg" and len(done["faces"]) == 1
    assert (inbox / "_processed/inside.jpg").is_symlink()
    rejected = {e["path"]: e for e in of(events, "photo_rejected")}
    assert {p: e["reason"] for p, e in rejected.items()} == {
        "outside.jpg": "symlink_outside", "dangling.jpg": "symlink_dangling", "folder.jpg": "symlink_not_a_file"}
    for name, e in rejected.items():
        assert e["dest"] == f"_rejected/{e['reason']}/{name}" and (inbox / e["dest"]).is_symlink(), e
        assert e["error"]
    # targets untouched
    assert targets["inside.jpg"].read_bytes() == (faces_dir / "identities/obama/obama.jpg").read_bytes()
    assert targets["outside.jpg"].read_bytes() == (faces_dir / "identities/biden/biden.jpg").read_bytes()
    assert targets["folder.jpg"].is_dir()
    assert sorted(p.name for p in inbox.iterdir()) == ["_processed", "_rejected"]


def test_symlinks_through_reconcile(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    targets = _links(tmp_path, data, faces_dir)
    for name, target in targets.items():
        (data / "inbox" / name).symlink_to(target)
    env = _env(models_root)
    cli(data, "reconcile", env=env)
    _check_links(data, targets, evs(data, env), faces_dir)


def test_a_link_whose_target_was_processed_first(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    shutil.copy(faces_dir / "identities/obama/obama.jpg", inbox / "b.jpg")
    (inbox / "z.jpg").symlink_to("b.jpg")  # followed when received; b.jpg is processed (moved) first
    env = _env(models_root)
    cli(data, "reconcile", env=env)
    events = evs(data, env)
    assert [e["path"] for e in of(events, "photo_processed")] == ["b.jpg"]
    (rejected,) = of(events, "photo_rejected")
    assert rejected["path"] == "z.jpg" and rejected["reason"] == "symlink_dangling"
    assert (inbox / "_rejected/symlink_dangling/z.jpg").is_symlink() and (inbox / "_processed/b.jpg").is_file()


def test_symlinks_through_the_daemon(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    targets = _links(tmp_path, data, faces_dir)
    d = DaemonProcess(data, _env(models_root)).start()
    for name, target in targets.items():
        (data / "inbox" / name).symlink_to(target)
    d.wait_for(lambda: d.kinds().count("photo_rejected") == 3 and "photo_processed" in d.kinds(), "four links handled")
    _alive(d)
    assert d.terminate() == 0
    _check_links(data, targets, [{"kind": e["kind"], **e} for e in d.events()], faces_dir)
    assert d.output().count('"photo rejected"') == 3


def test_download_renamed_to_its_final_name_while_running(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data, _env(models_root)).start()
    part = data / "inbox" / "x.jpg.download"
    shutil.copy(faces_dir / "identities/obama/obama.jpg", part)
    time.sleep(1.5)  # the browser takes its time; the watcher has seen the temporary name settle
    part.rename(data / "inbox" / "x.jpg")
    d.wait_for(lambda: "photo_processed" in d.kinds(), "x.jpg processed")
    assert d.terminate() == 0
    (done,) = [e for e in d.events() if e["kind"] == "photo_processed"]
    assert done["path"] == "x.jpg" and (data / "inbox/_processed/x.jpg").is_file()


# --- the corpus and the logs ------------------------------------------------------------------------


def _png(path: Path) -> None:
    Image.new("RGB", (64, 64), (120, 80, 40)).save(path)


def test_corpus_png_with_a_non_utf8_name_is_renamed_with_an_event(tmp_path: Path) -> None:
    data = tmp_path / "data"
    faces = data / "corpus/faceset_001/faces"
    faces.mkdir(parents=True)
    _png(faces / "ok.png")
    _png(raw(faces, b"caf\xe9.png"))
    planned = cli(data, "reconcile", "--dry-run").stdout
    assert "name_escaped" in planned and "faceset_001/faces/caf\\xe9.png" in planned
    assert names_in(faces) == sorted([b"caf\xe9.png", b"ok.png"])  # a dry run renames nothing
    cli(data, "reconcile")
    assert names_in(faces) == sorted([b"caf\\xe9.png", b"ok.png"])
    events = evs(data)
    (renamed,) = of(events, "name_escaped")
    assert renamed["path"] == "faceset_001/faces/caf\\xe9.png" and renamed["root"] == "corpus"
    assert bytes.fromhex(renamed["path_hex"]) == b"faceset_001/faces/caf\xe9.png"
    assert sorted(e["path"] for e in of(events, "face_added")) == [
        "faceset_001/faces/caf\\xe9.png", "faceset_001/faces/ok.png"]
    cli(data, "reconcile")
    assert len(evs(data)) == len(events)


def test_corpus_png_with_a_non_utf8_name_while_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    faces = data / "corpus/faceset_001/faces"
    faces.mkdir(parents=True)
    _png(faces / "ok.png")
    d = DaemonProcess(data, {"FACESETD_WATCH_SETTLE_S": "0.5"}).start()
    _png(raw(faces, b"new_\xe9.png"))
    d.wait_for(lambda: "name_escaped" in d.kinds(), "the odd corpus name escaped")
    d.wait_for(lambda: any(e["kind"] == "face_added" and e["path"].endswith("new_\\xe9.png") for e in d.events()),
               "the face added under its escaped name")
    _alive(d)
    assert d.terminate() == 0
    assert names_in(faces) == sorted([b"new_\\xe9.png", b"ok.png"])


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_log_lines_with_odd_names(fmt: str) -> None:
    import structlog

    from daemon.logs import configure_logging

    buf = io.BytesIO()
    stream = io.TextIOWrapper(buf, encoding="utf-8", errors="strict", write_through=True)
    try:
        configure_logging("info", fmt, stream)
        structlog.get_logger("t").warning("inbox file skipped", path=os.fsdecode(RAW), error=os.fsdecode(b"\xff"))
        text = buf.getvalue().decode("utf-8")
    finally:
        configure_logging("info", "json")
    assert "latin1_\\xe9t\\xe9.jpg" in text.replace("\\\\", "\\") and "\\udc" not in text


# --- the inbox interface (no models) ----------------------------------------------------------------


def test_list_waiting_and_receive(tmp_path: Path) -> None:
    from daemon.inbox import list_waiting, receive

    pipeline = open_pipeline(tmp_path / "data")
    inbox = pipeline.config.inbox_dir
    (inbox / "faceset_002").mkdir(parents=True)
    (inbox / "_processed").mkdir()
    (inbox / "faceset_002/seed.jpg").write_bytes(b"seed")
    (inbox / "b.jpg").write_bytes(b"b")
    raw(inbox, RAW).write_bytes(b"latin")
    (inbox / "a.jpg.download").write_bytes(b"partial")
    (inbox / "_processed/old.jpg").write_bytes(b"old")
    (inbox / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    waiting = list_waiting(inbox)
    assert waiting == ["faceset_002/seed.jpg", "b.jpg", "gone.jpg", os.fsdecode(RAW)]
    positions = [receive(pipeline, inbox / rel) for rel in waiting]
    assert all(p is not None for p in positions)
    assert [receive(pipeline, inbox / rel) for rel in waiting] == [None] * 4  # already received
    got: list[Any] = [pipeline.log.get(p).event for p in positions if p is not None]  # type: ignore[union-attr]
    assert [e.path for e in got] == ["faceset_002/seed.jpg", "b.jpg", "gone.jpg", SHOWN]
    assert got[2].link_problem == "symlink_dangling" and got[3].path_hex == RAW.hex()
    assert got[0].path_hex == ""


# --- the watcher: links are reported, one list of temporary names -----------------------------------


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_the_watcher_reports_links_and_finished_downloads(tmp_path: Path, polling: bool) -> None:
    import threading

    from daemon.watcher import FileReady, Watcher

    root = (tmp_path / "inbox").resolve()
    root.mkdir()
    (tmp_path / "folder").mkdir()
    seen: list[object] = []
    cond = threading.Condition()

    def got(event: object) -> None:
        with cond:
            seen.append(event)
            cond.notify_all()

    want = {FileReady(root / n, root) for n in ("dangling.jpg", "folder.jpg", "x.jpg", raw(root, RAW).name)}
    with Watcher([root], got, polling=polling, poll_interval_s=0.1, settle_s=0.3):
        (root / "dangling.jpg").symlink_to(tmp_path / "nothing.jpg")
        (root / "folder.jpg").symlink_to(tmp_path / "folder")
        raw(root, RAW).write_bytes(b"latin")
        (root / "x.jpg.download").write_bytes(b"partial")
        time.sleep(0.8)  # long past settle_s: a temporary name is never reported
        (root / "x.jpg.download").rename(root / "x.jpg")
        with cond:
            cond.wait_for(lambda: want <= set(seen), timeout=5)
    assert want <= set(seen), seen
    assert not [e for e in seen if "download" in str(getattr(e, "path", ""))]
