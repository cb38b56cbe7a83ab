"""The one-shot verbs as a person meets them: at a terminal (a real pty through script(1)), with a misspelt
--kind, asking why a photo gave nothing, looking at the pool, and previewing a reconcile. Real models, real
photos, the real CLI as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.handler_fixtures import png, variant, write_corpus
from tests.helpers import REPO, cli

PHOTOS = {  # inbox path -> photo under ../shared/faces
    "faceset_001/biden.jpg": "identities/biden/biden.jpg",  # seeds faceset_001
    "obama.jpg": "identities/obama/obama.jpg",  # two photos of one person: pooled, under the gate of 6
    "obama1.jpg": "identities/obama/obama1.jpg",
    "nothing_here.jpg": "no_face/pp7.jpg",  # no face: processed with a note
}


def _env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_LOGGING_LEVEL": "warning"}


def on_terminal(data: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`facesetd ARGS` under a real pty, as typed at a terminal (script(1) gives it one; its size is 0x0)."""
    command = shlex.join([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), *args])
    return subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO, timeout=300,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, models_root: Path):
    """A data folder whose inbox was reconciled once at a terminal: (data, env, what the terminal showed)."""
    assert shutil.which("script"), "script(1) (util-linux) is needed to give the CLI a terminal"
    data = tmp_path_factory.mktemp("user") / "data"
    for rel, src in PHOTOS.items():
        (data / "inbox" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(faces_dir / src, data / "inbox" / rel)
    env = _env(models_root)
    shown = on_terminal(data, "reconcile", env=env)
    return data, env, shown


def test_reconcile_at_a_terminal_shows_photos_with_their_total(reconciled) -> None:
    _data, _env_, shown = reconciled
    out = shown.stdout.replace("\r", "\n")
    assert shown.returncode == 0, out
    assert "Traceback" not in out and "TypeError" not in out
    assert "photos: 100%" in out and "4/4" in out, out  # the inbox's 4 photos, counted against their total
    assert "checks:" in out and "faces=3" in out, out  # the checks' events, and the 3 faces cropped
    assert "received 4 inbox photos" in out


def test_the_other_verbs_at_a_terminal(reconciled) -> None:
    data, env, _shown = reconciled
    for args in (["reconcile", "--dry-run"], ["status"], ["events"], ["reconcile"]):
        run = on_terminal(data, *args, env=env)
        out = run.stdout.replace("\r", "\n")
        assert run.returncode == 0 and "Traceback" not in out, (args, out)
    again = on_terminal(data, "reconcile", "--dry-run", env=env).stdout
    assert "would record photo_received" not in again and "0 events would be recorded" in again  # all done


def test_events_kind_must_be_a_kind(reconciled) -> None:
    data, env, _shown = reconciled
    bad = cli(data, "events", "--kind", "photo_procesed", env=env, check=False)
    assert bad.returncode == 1 and bad.stdout == ""
    (line,) = bad.stderr.strip().splitlines()
    assert "unknown event kind 'photo_procesed'" in line and "photo_processed" in line and "face_pruned" in line
    helped = cli(data, "events", "--help", env=env).stdout
    assert "photo_rejected" in helped and "faceset_quarantined" in helped and "--path" in helped


def test_events_path_says_why_a_photo_gave_nothing(reconciled) -> None:
    data, env, _shown = reconciled
    text = cli(data, "events", "--path", "nothing_here.jpg", env=env).stdout
    kinds = [line.split()[2] for line in text.splitlines()]
    assert kinds == ["photo_received", "photo_processed"], text
    assert "no face found" in text  # the note only --json showed before
    # by its path under _processed/ too, and a photo whose face went to the pool: its crop's events come along
    pooled = cli(data, "events", "--path", str(data / "inbox/_processed/obama.jpg"), env=env).stdout
    assert [ln.split()[2] for ln in pooled.splitlines()][:3] == ["photo_received", "pool_face_added", "photo_processed"]
    assert "1 face to pool" in pooled
    seeded = [json.loads(ln) for ln in cli(data, "events", "--path", "faceset_001/biden.jpg", "--json",
                                           env=env).stdout.splitlines()]
    crops = {e["subject"] for e in seeded if e["kind"] == "face_added"}
    assert len(crops) == 1 and all(c.startswith("faceset_001/faces/") for c in crops)
    assert {"face_routed", "face_analyzed"} <= {e["kind"] for e in seeded if e["subject"] in crops}
    missing = cli(data, "events", "--path", "never_seen.jpg", env=env, check=False)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_status_shows_the_pool_and_every_faceset(reconciled) -> None:
    data, env, _shown = reconciled
    text = cli(data, "status", env=env).stdout
    assert "pool          2 faces from 2 photos" in text
    assert "1 close to a new faceset (photos each: 2; 5 needed)" in text
    (row,) = [ln for ln in text.splitlines() if ln.strip().startswith("faceset_001")]
    assert row.split() == ["faceset_001", "active", "1", "0", "1/8"]
    s = json.loads(cli(data, "status", "--json", env=env).stdout)
    assert s["pool"]["faces"] == 2 and s["pool"]["close_to_gate"] == 1 and s["pool"]["close_sizes"] == [2]
    assert s["faceset_list"] == [{"name": "faceset_001", "area": "active", "faces": 1, "dropped": 0, "top_n": 8,
                                  "in_top_n": 1, "label": ""}]
    assert s["facesets"]["active"] == 1 and s["images"] == {"active": 1, "dropped": 0}


def test_restore_says_what_it_undoes(tmp_path: Path) -> None:
    helped = cli(tmp_path / "data", "restore", "--help").stdout
    assert "prune" in helped and "faceset_quarantined" in helped and "or merge" not in helped
    readme = (REPO / "README.md").read_text()
    assert "undo a prune, quarantine or merge" not in readme


def _fingerprint(data: Path) -> dict[str, str]:
    """sha256 of every file in the data folder (the log, its projections, the corpus, the inbox)."""
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file()}


def test_dry_run_previews_the_checks_decisions_and_changes_nothing(tmp_path: Path, models_root: Path,
                                                                   faces_dir: Path, crops) -> None:
    data = tmp_path / "data"
    env = _env(models_root)
    write_corpus(data / "corpus", {f"faceset_001/faces/{n}_{i}.png": png(variant(crops[n], i))
                                   for i, n in enumerate(("obama", "obama1", "obama2"))})
    cli(data, "reconcile", env=env)  # the corpus adopted and checked: a real log to copy
    write_corpus(data / "corpus", {"faceset_001/faces/pair.png": png(crops["two_faces"])})
    (data / "inbox").mkdir(exist_ok=True)
    shutil.copy(faces_dir / "identities/biden/biden.jpg", data / "inbox/biden.jpg")
    head = len(cli(data, "events", env=env).stdout.splitlines())
    before = _fingerprint(data)

    out = cli(data, "reconcile", "--dry-run", env=env).stdout
    assert "would record face_added               faceset_001/faces/pair.png" in out
    (pruned,) = [ln for ln in out.splitlines() if "face_pruned" in ln]
    assert "faceset_001/faces/pair.png" in pruned and "2 faces" in pruned, out  # with the check's reason
    assert "would record photo_received           biden.jpg" in out
    assert "the checks would record" in out and "1 inbox photo would be received" in out
    planned = json.loads(cli(data, "reconcile", "--dry-run", "--json", env=env).stdout)["planned"]
    assert {"kind": "face_pruned", "subject": "faceset_001/faces/pair.png", "stage": "check"}.items() <= \
        [p for p in planned if p["kind"] == "face_pruned"][0].items()
    assert _fingerprint(data) == before  # log, projections, corpus and inbox: byte for byte
    assert len(cli(data, "events", env=env).stdout.splitlines()) == head

    cli(data, "reconcile", env=env)  # what the preview said is what happens
    done = [json.loads(ln) for ln in cli(data, "events", "--json", "--kind", "face_pruned", env=env).stdout.splitlines()]
    assert [e["subject"] for e in done] == ["faceset_001/faces/pair.png"]
