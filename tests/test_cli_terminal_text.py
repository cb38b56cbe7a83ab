"""What the verbs print to a person's terminal (issue 20): names and labels with their control characters escaped,
events that say what changed (the old and new label, where a face moved, which photo of a shared name), and counts
in the singular for one. Real photos, the real buffalo_sc models, the real CLI; a real pty where it matters."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli.event_changes import change
from daemon.cli.printable import counted, printable
from tests.helpers import REPO, cli

# A name that retitles the terminal (OSC 0 ... BEL), turns the text red and clears the screen (CSI), and sends a
# C1 CSI (U+009B) and a DEL: every byte a terminal acts on.
NASTY = "\x1b[31mred\x1b]0;title\x07\x1b[2J\u009b2J\x7f"
NASTY_SHOWN = "\\x1b[31mred\\x1b]0;title\\x07\\x1b[2J\\x9b2J\\x7f"
TERMINAL_BYTES = (b"\x1b", b"\x07", b"\xc2\x9b", b"\x7f")  # none may reach the terminal


def test_printable_escapes_every_control_character() -> None:
    assert printable(NASTY) == NASTY_SHOWN
    assert printable("IMG_1.jpg") == "IMG_1.jpg" and printable("José ☃.jpg") == "José ☃.jpg"
    assert printable("a\nb\tc\rd") == "a\\x0ab\\x09c\\x0dd"
    assert printable("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"
    assert printable(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"  # a non-UTF-8 name from a command line
    assert all(ch.isprintable() for ch in printable("".join(map(chr, range(0xA0)))))


def test_counted_is_singular_for_one() -> None:
    assert counted(1, "photo") == "1 photo" and counted(0, "photo") == "0 photos" and counted(2, "face") == "2 faces"
    assert counted(1, "identity", "identities") == "1 identity" and counted(3, "identity", "identities") == "3 identities"


def test_change_says_what_an_event_changed() -> None:
    assert change("faceset_labelled", "faceset_001", {"label": "New", "previous": "Old"}) == "'Old' -> 'New'"
    assert change("faceset_labelled", "faceset_001", {"label": "New", "previous": ""}) == "(no label) -> 'New'"
    assert change("faceset_labelled", "faceset_001", {"label": "", "previous": "Old"}) == "label 'Old' taken off"
    assert change("faceset_labelled", "faceset_001", {"label": "Old", "previous": "New", "undoes": 7}) \
        == "'New' -> 'Old' (undoes event 7)"
    moved = {"moves": (("_pool/a.png", "faceset_001/faces/a.png"),)}
    assert change("face_moved", "_pool/a.png", moved) == "-> faceset_001/faces/a.png"
    assert change("decision_reverted", "faceset_001/faces/a.png", moved) == "_pool/a.png -> faceset_001/faces/a.png"
    assert change("photo_received", "img1.jpg", {"sha256": "0123456789abcdef"}) == "[01234567]"
    assert change("pool_face_added", "_pool/x.png", {"photo_sha256": "fedcba9876543210"}) == "from photo [fedcba98]"
    assert change("face_added", "f/faces/x.png", {"source": {"photo_sha256": "aa" * 32}}) == "from photo [aaaaaaaa]"
    assert change("face_analyzed", "f/faces/x.png", {}) == ""


def _env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_LOGGING_LEVEL": "warning"}


def on_terminal(data: Path, *args: str, env: dict[str, str]) -> bytes:
    """The bytes `facesetd ARGS` sends to a real pty (script(1) gives it one), stdout and stderr together."""
    command = shlex.join([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), *args])
    run = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout.decode(errors="replace")
    return run.stdout


def _no_terminal_bytes(shown: bytes) -> str:
    for raw in TERMINAL_BYTES:
        assert raw not in shown, (raw, shown.decode(errors="replace")[-3000:])
    return shown.decode().replace("\r\n", "\n")


def _recorded(out: str) -> int:
    found = re.search(r"recorded as event (\d+)", out)
    assert found, out
    return int(found.group(1))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, models_root: Path):
    """faceset_001 seeded with biden; obama's photo under NASTY's name (its face waits in the pool); img1.jpg of
    obama1, then a second img1.jpg of other bytes (biden2); a photo still being written under NASTY's name."""
    assert shutil.which("script"), "script(1) (util-linux) is needed to give the CLI a terminal"
    data = tmp_path_factory.mktemp("terminal") / "data"
    inbox, ids = data / "inbox", faces_dir / "identities"
    (inbox / "faceset_001").mkdir(parents=True)
    shutil.copy(ids / "biden/biden.jpg", inbox / "faceset_001/biden.jpg")
    shutil.copy(ids / "obama/obama.jpg", inbox / f"{NASTY}.jpg")
    shutil.copy(ids / "obama/obama1.jpg", inbox / "img1.jpg")
    env = _env(models_root)
    cli(data, "reconcile", env=env)
    shutil.copy(ids / "biden/biden2.jpg", inbox / "img1.jpg")  # the same name, other bytes
    # Cut short and written just now: left for its writer (deferred), listed by name in `status`.
    whole = (ids / "obama/obama2.jpg").read_bytes()
    (inbox / f"{NASTY}.partial.jpg").write_bytes(whole[: len(whole) // 3])
    cli(data, "reconcile", env=env)
    return data, env


def test_events_and_status_escape_a_nasty_name_at_a_terminal(corpus) -> None:
    data, env = corpus
    events = _no_terminal_bytes(on_terminal(data, "events", env=env))
    received = [ln for ln in events.splitlines() if "photo_received" in ln and NASTY_SHOWN in ln]
    assert len(received) == 2, events  # the photo, and the one still being written
    assert any("photo_deferred" in ln and NASTY_SHOWN in ln for ln in events.splitlines()), events
    status = _no_terminal_bytes(on_terminal(data, "status", env=env))
    assert f"left in place (do not decode yet, or cannot be read yet): {NASTY_SHOWN}.partial.jpg" in status, status
    # --json stays exact JSON: the name as it is, control characters and all, once decoded
    received_json = [json.loads(ln) for ln in cli(data, "events", "--kind", "photo_received", "--json",
                                                    env=env).stdout.splitlines()]
    assert f"{NASTY}.jpg" in {e["subject"] for e in received_json}
    status_json = json.loads(cli(data, "status", "--json", env=env).stdout)
    assert status_json["inbox"]["deferred"] == [f"{NASTY}.partial.jpg"]


def test_a_nasty_label_is_escaped_in_status_events_and_the_label_line(corpus) -> None:
    data, env = corpus
    labelled = cli(data, "label", "faceset_001", f"Joe {NASTY}", env=env)
    assert "\x1b" not in labelled.stdout and f"labelled faceset_001 'Joe {NASTY_SHOWN}'" in labelled.stdout
    status = _no_terminal_bytes(on_terminal(data, "status", env=env))
    (row,) = [ln for ln in status.splitlines() if ln.strip().startswith("faceset_001")]
    assert row.split()[:2] == ["faceset_001", "active"] and row.endswith(f"Joe {NASTY_SHOWN}"), row
    events = _no_terminal_bytes(on_terminal(data, "events", "--kind", "faceset_labelled", env=env))
    assert f"faceset_001 (no label) -> 'Joe {NASTY_SHOWN}'" in events, events
    # an error message names what the user typed: escaped too
    failed = cli(data, "move", f"{NASTY}.png", "--to", "pool", env=env, check=False)
    assert failed.returncode == 1 and "\x1b" not in failed.stderr and NASTY_SHOWN in failed.stderr, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    cli(data, "label", "faceset_001", "", env=env)


def test_events_show_the_old_and_new_label_and_its_undo(corpus) -> None:
    data, env = corpus
    first = _recorded(cli(data, "label", "faceset_001", "Old", env=env).stdout)
    second = _recorded(cli(data, "label", "faceset_001", "New", env=env).stdout)
    undo = _recorded(cli(data, "restore", str(second), env=env).stdout)
    off = cli(data, "label", "faceset_001", "", env=env).stdout
    assert "took the label off faceset_001" in off
    lines = {int(ln.split()[0]): ln for ln in cli(data, "events", "--kind", "faceset_labelled", env=env).stdout
             .splitlines()}
    assert lines[first].endswith("faceset_001 (no label) -> 'Old'")
    assert lines[second].endswith("faceset_001 'Old' -> 'New'")
    assert lines[undo].endswith(f"faceset_001 'New' -> 'Old' (undoes event {second})")
    assert lines[_recorded(off)].endswith("faceset_001 label 'Old' taken off")


def test_events_show_where_a_face_moved_and_back(corpus) -> None:
    data, env = corpus
    pooled = [json.loads(ln) for ln in cli(data, "events", "--kind", "pool_face_added", "--json",
                                           env=env).stdout.splitlines()]
    face = pooled[0]["subject"]  # _pool/<id>.png
    name = face.removeprefix("_pool/")
    moved = _recorded(cli(data, "move", face, "--to", "dropped", env=env).stdout)
    back = _recorded(cli(data, "restore", str(moved), env=env).stdout)
    lines = {int(ln.split()[0]): ln for ln in cli(data, "events", "--kind", "face_moved", env=env).stdout.splitlines()}
    assert "face_moved" in lines[moved] and f"{face} -> _pool/_dropped/{name}" in lines[moved], lines
    assert f"_pool/_dropped/{name} -> {face} (undoes event {moved})" in lines[back], lines


def test_events_path_tells_two_photos_of_one_name_apart(corpus) -> None:
    data, env = corpus
    photos = [json.loads(ln) for ln in cli(data, "events", "--kind", "photo_received", "--json",
                                           env=env).stdout.splitlines()]
    shas = [e["payload"]["sha256"][:8] for e in photos if e["subject"] == "img1.jpg"]
    assert len(set(shas)) == 2
    shown = cli(data, "events", "--path", "img1.jpg", env=env)
    received = [ln for ln in shown.stdout.splitlines() if ln.split()[2] == "photo_received"]
    assert [ln.split()[3:5] for ln in received] == [["img1.jpg", f"[{sha}]"] for sha in shas], shown.stdout
    processed = [ln for ln in shown.stdout.splitlines() if ln.split()[2] == "photo_processed"]
    assert {ln.split()[4] for ln in processed} == {f"[{sha}]" for sha in shas}, shown.stdout
    assert any("from photo" in ln for ln in shown.stdout.splitlines()), shown.stdout  # the crops say whose
    (note,) = shown.stderr.strip().splitlines()
    assert "'img1.jpg' names 2 different photos" in note and all(f"[{sha}]" in note for sha in shas)
    one = cli(data, "events", "--path", "faceset_001/biden.jpg", env=env)
    assert one.stderr == ""  # one photo: nothing to tell apart


def test_counts_are_singular_for_one(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    shutil.copy(faces_dir / "identities/obama/obama.jpg", data / "inbox/obama.jpg")
    env = _env(models_root)
    preview = cli(data, "reconcile", "--dry-run", env=env).stdout
    assert "1 inbox photo would be received" in preview, preview
    out = cli(data, "reconcile", env=env).stdout
    assert "received 1 inbox photo;" in out, out
    status = cli(data, "status", env=env).stdout
    assert "pool          1 face from 1 photo waiting" in status and "inbox         0 photos waiting" in status
    shutil.copy(faces_dir / "identities/obama/obama1.jpg", data / "inbox/obama1.jpg")
    assert "inbox         1 photo waiting" in cli(data, "status", env=env).stdout


def test_log_lines_at_a_terminal_escape_a_nasty_name(corpus, tmp_path: Path, faces_dir: Path) -> None:
    """`reconcile -v` at a terminal: the coloured INFO lines name the photo escaped too (daemon/logs.py)."""
    data, env = corpus
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    shutil.copy(faces_dir / "identities/obama/obama3.jpg", copy / "inbox" / f"{NASTY}-3.jpg")
    raw = on_terminal(copy, "reconcile", "-v", env={**env, "FACESETD_LOGGING_LEVEL": "info"})
    # the log's own colours are ESC [ ... m; none of the name's sequences may reach the terminal
    for sequence in (b"\x1b]0;title", b"\x07", b"\x1b[2J", b"\xc2\x9b", b"\x7f", b"\x1b[31mred"):
        assert sequence not in raw, (sequence, raw.decode(errors="replace")[-3000:])
    shown = re.sub(r"\x1b\[[0-9;]*m", "", raw.decode())
    assert any("photo routed" in ln and NASTY_SHOWN in ln for ln in shown.splitlines()), shown
