"""Inputs that once bricked a data folder (issue 23, items 1-2): each crashed the daemon, and every restart, `reconcile`
and `rebuild` crashed again. Now each is refused or handled with its reason, and the daemon lives on.

- a seed folder named faceset_ + 240 digits: refused as a seeding folder (photo to _rejected/bad_seed_folder/);
- a photo at a 4,075-byte path: handled, moved to _processed/<its name> (its path under _processed/ would be past
  PATH_MAX);
- a seed folder the daemon may not write: the photo is handled once and left where it is, never copied, never
  received again while its folder keeps it (status says so); once the folder is writable it moves to _processed/;
- inbox/_processed, inbox/_rejected or corpus/_pool a plain file: photos wait (photo_deferred, reason blocked, one
  error line each), the daemon stays up, and they go through once the folder is a folder again;
- a long faceset name in an older log: its .fsz temp names fit NAME_MAX.

After each: the daemon alive, every photo accounted for once, every manifest entry on disk, rebuild byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess
from helpers import cli, open_pipeline
from invariants import manifest_entries_exist, photos_accounted_once, rebuild_identical, sha256_file

OBAMA = "identities/obama/obama.jpg"
BIDEN = "identities/biden/biden.jpg"
ABSURD_SEED = "faceset_" + "1" * 240  # faceset_ and 240 digits: 248 characters
LONG_FACESET = "faceset_1" + "0" * 231  # the attacker's first folder, 240 characters: its .fsz temp names broke


def _env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_WATCH_SETTLE_S": "0.5"}


def _events(data: Path, env: dict[str, str]) -> list[dict]:
    out = cli(data, "events", "--json", env=env).stdout.splitlines()
    return [{"kind": e["kind"], **e["payload"]} for e in map(json.loads, out)]


def _of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["kind"] == kind]


def _alive(d: DaemonProcess) -> None:
    assert d.proc is not None and d.proc.poll() is None, d.output()[-3000:]


def _sound(data: Path, drops: list[str], env: dict[str, str], may_wait: tuple[str, ...] = ()) -> None:
    """The promises after an attack: every photo in one place and finished once, manifests true, rebuild identical."""
    problems = photos_accounted_once(data, drops, may_wait=may_wait) + manifest_entries_exist(data)
    problems += rebuild_identical(data, env)
    assert not problems, "\n".join(problems)


def _start(data: Path, env: dict[str, str], prefix: list[str] | None = None) -> DaemonProcess:
    """A daemon start with a log of its own: "facesetd running" and "caught up" are then this start's."""
    d = DaemonProcess(data, env, prefix=prefix)
    starts = len(list(data.parent.glob(f"{data.name}-start-*.log")))
    d.log_file = data.parent / f"{data.name}-start-{starts}.log"
    return d.start()


def _deep_photo(inbox: Path, src: Path) -> str:
    """A copy of `src` at the deepest path the kernel takes (4095 bytes with the inbox's own; the attacker's was 4,075
    bytes inside an inbox at a 20-byte path): 16 folders of 250 bytes, then the name. Its inbox-relative path."""
    folders = "/".join(f"d{i:03d}" + "x" * 246 for i in range(16))
    length = 4095 - len(os.fsencode(inbox)) - 1
    name = "p" * (length - len(folders) - 1 - len(".jpg")) + ".jpg"
    rel = f"{folders}/{name}"
    assert len(os.fsencode(inbox / rel)) == 4095 and len(name) >= 5, len(os.fsencode(inbox / rel))
    (inbox / rel).parent.mkdir(parents=True)
    shutil.copy(src, inbox / rel)
    return rel


def _short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with a short path: the deep photo needs all but 20 bytes of PATH_MAX."""
    base = Path("/tmp") / f"fsd-{os.getpid()}-{tmp_path_factory.getbasetemp().name[-6:]}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    return base


# --- 1. the absurd seed folder and the deep path, through the daemon and its restarts ------------------------------


@pytest.mark.slow
def test_absurd_seed_folder_and_deep_path_through_the_daemon(tmp_path_factory: pytest.TempPathFactory,
                                                             faces_dir: Path, models_root: Path) -> None:
    base = _short_tmp(tmp_path_factory)
    try:
        data = base / "d"
        inbox = data / "inbox"
        (inbox / ABSURD_SEED).mkdir(parents=True)
        shutil.copy(faces_dir / OBAMA, inbox / ABSURD_SEED / "obama.jpg")
        deep = _deep_photo(inbox, faces_dir / BIDEN)
        env = _env(models_root)
        d = _start(data, env)
        d.wait_for(lambda: len([k for k in d.kinds() if k in ("photo_processed", "photo_rejected")]) == 2,
                   "both photos handled")
        d.idle()
        _alive(d)
        events = _events(data, env)
        (refused,) = _of(events, "photo_rejected")
        assert refused["reason"] == "bad_seed_folder"
        assert refused["dest"] == f"_rejected/bad_seed_folder/{ABSURD_SEED}/obama.jpg"
        assert "is not a seeding folder: a faceset number has at most 6 digits, this one has 240" in refused["error"]
        assert not _of(events, "faceset_created")  # no faceset of that name, nor any folder for it in the corpus
        assert not any(p.name.startswith("faceset_1111") for p in (data / "corpus").iterdir())
        (done,) = _of(events, "photo_processed")
        assert done["path"] == deep and done["dest"] == f"_processed/{deep.rsplit('/', 1)[1]}"
        assert (inbox / done["dest"]).is_file()
        assert d.terminate() == 0
        # a restart takes nothing again and says nothing of them
        d2 = _start(data, env)
        d2.idle()
        _alive(d2)
        assert d2.terminate() == 0
        assert len(_events(data, env)) == len(events)
        assert "Traceback" not in d.output() + d2.output()
        _sound(data, [sha256_file(faces_dir / OBAMA), sha256_file(faces_dir / BIDEN)], env)
        cli(data, "reconcile", env=env)  # crashed in find_moved before
        assert len(_events(data, env)) == len(events)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_faceset_names_are_bounded() -> None:
    from state.layout import FACESET_DIGITS_MAX, faceset_name_problem, faceset_number, parse_face_path

    assert faceset_number("faceset_001") == 1 and faceset_number(f"faceset_{'9' * FACESET_DIGITS_MAX}") > 0
    assert faceset_number(f"faceset_{'1' * (FACESET_DIGITS_MAX + 1)}") == -1
    assert faceset_number("faceset_\u0661\u0662\u0663") == -1  # Arabic-Indic digits are not 123
    assert parse_face_path(f"{ABSURD_SEED}/faces/a.png") is None
    assert faceset_name_problem(ABSURD_SEED) == "a faceset number has at most 6 digits, this one has 240"
    assert faceset_name_problem("faceset_001") == faceset_name_problem("holiday") == faceset_name_problem("faceset_7") == ""


def test_temp_names_fit_whatever_the_target_name(tmp_path: Path) -> None:
    """A .fsz of a faceset whose name an older facesetd let through (240 characters): its temp name
    (`.<name>.tmp-XXXXXXXX`) was past NAME_MAX, and every render, restart and rebuild failed on it."""
    from state.atomic import atomic_write, link_or_write

    name = f"{LONG_FACESET}_top8.fsz"  # 263 bytes as a temp name before
    assert atomic_write(tmp_path / name, b"full")
    assert (tmp_path / name).read_bytes() == b"full"
    assert link_or_write(tmp_path / name, tmp_path / f"{LONG_FACESET}.fsz", b"full")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{LONG_FACESET}.fsz"])


def test_rebuild_of_a_log_with_a_long_faceset_name(tmp_path: Path) -> None:
    """The log an older facesetd wrote for the attacker's seed folder: `rebuild` and a render now pass."""
    from state import events as ev

    data = tmp_path / "data"
    pipeline = open_pipeline(data)
    folder = pipeline.config.corpus_dir / LONG_FACESET / "faces"
    folder.mkdir(parents=True)
    pipeline.log.append([ev.FacesetCreated(faceset=LONG_FACESET, reason="seeded through inbox (an older facesetd)")])
    pipeline.settle()
    pipeline.log.close()
    cli(data, "rebuild")
    fsz = sorted(p.name for p in (folder.parent).iterdir() if p.suffix == ".fsz")
    assert fsz == [f"{LONG_FACESET}.fsz", f"{LONG_FACESET}_top8.fsz"]
    problems = rebuild_identical(data)
    assert not problems, problems


# --- 2. a seed folder the daemon may not write ----------------------------------------------------------------------


def _without_dac_override() -> list[str]:
    """A prefix running the daemon as root without CAP_DAC_OVERRIDE (setpriv): the permission bits then bind it as
    they bind the unprivileged user facesetd runs as. The tests run as root; a plain user needs no prefix."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: a folder cannot be made unwritable to the daemon")
    probe = subprocess.run([setpriv, "--bounding-set", "-dac_override", "--", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop CAP_DAC_OVERRIDE here: {probe.stderr.decode().strip()}")
    return [setpriv, "--bounding-set", "-dac_override", "--"]


@pytest.mark.slow
def test_unwritable_seed_folder_is_received_once_across_restarts(tmp_path: Path, faces_dir: Path,
                                                                  models_root: Path) -> None:
    prefix = _without_dac_override()
    data = tmp_path / "data"
    seed = data / "inbox" / "faceset_007"
    seed.mkdir(parents=True)
    shutil.copy(faces_dir / OBAMA, seed / "obama.jpg")
    seed.chmod(0o555)  # as root made it, with the daemon as another user
    env = _env(models_root)
    try:
        outputs = ""
        for start in range(3):  # every restart added one more copy to _processed/ before
            d = _start(data, env, prefix)
            d.wait_for(lambda d=d: "photo_processed" in d.kinds(), "the seed photo handled")
            d.idle()
            _alive(d)
            assert d.terminate() == 0
            outputs += d.output()
            events = _events(data, env)
            assert [e["kind"] for e in events if e["kind"].startswith("photo_")] == ["photo_received",
                                                                                     "photo_processed"], start
        (done,) = _of(events, "photo_processed")
        assert done["dest"] == "" and done["faces"][0]["to"] == "faceset_007"
        assert done["left"] == "inbox/faceset_007/obama.jpg stays where it is: its folder does not let facesetd move"\
                               " it (Permission denied)"
        assert (seed / "obama.jpg").is_file()
        assert not [p for p in (data / "inbox/_processed").rglob("*") if p.is_file()]  # never a copy
        assert outputs.count('"photo left in place"') == 1  # told once, in the log
        status = cli(data, "status", env=env).stdout
        assert "inbox         0 photos waiting" in status
        assert "left where it is: inbox/faceset_007/obama.jpg stays where it is" in status
        assert "its folder does not let facesetd move it (Permission denied)" in cli(
            data, "events", "--path", "obama.jpg", env=env).stdout
        _sound(data, [sha256_file(faces_dir / OBAMA)], env)
        # the folder writable again: the photo moves to _processed/ (its bytes known: nothing routed twice)
        seed.chmod(0o755)
        d = _start(data, env, prefix)
        d.wait_for(lambda: d.kinds().count("photo_processed") == 2, "the photo moved once its folder allows it")
        d.idle()
        assert d.terminate() == 0
        last = _of(_events(data, env), "photo_processed")[-1]
        assert last["dest"] == "_processed/faceset_007/obama.jpg" and not last["left"] and not last["faces"]
        assert not (seed / "obama.jpg").exists()
        assert "left where it is" not in cli(data, "status", env=env).stdout
        _sound(data, [sha256_file(faces_dir / OBAMA)], env)
    finally:
        seed.chmod(0o755)


def test_a_move_across_file_systems_that_cannot_remove_its_source_leaves_no_copy(tmp_path: Path) -> None:
    """Staging on another file system: copy, then remove the original. When the original cannot be removed, the
    copy is taken back, so no retry ever makes a second one. /dev/shm is the other file system; the move runs in a
    child without CAP_DAC_OVERRIDE (as the daemon test's)."""
    import sys

    from helpers import REPO

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system: /dev/shm is not one here")
    prefix = _without_dac_override()
    src_dir = shm / f"fsd-{os.getpid()}"
    src_dir.mkdir()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    try:
        (src_dir / "a.jpg").write_bytes(b"photo")
        src_dir.chmod(0o555)
        script = ("import sys; from pathlib import Path; from handlers.inbox_files import LeftInPlace, move_aside\n"
                  "try:\n    move_aside(Path(sys.argv[1]), Path(sys.argv[2]), '_processed/a.jpg', 'sha')\n"
                  "except LeftInPlace as e:\n    print('left:', e)\n")
        for _attempt in range(2):
            run = subprocess.run([*prefix, sys.executable, "-c", script, str(src_dir / "a.jpg"), str(inbox)],
                                 capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
            assert run.stdout.strip() == "left: its folder does not let facesetd remove it (Permission denied)", run
        assert (src_dir / "a.jpg").read_bytes() == b"photo"
        assert not [p for p in inbox.rglob("*") if p.is_file()]
    finally:
        src_dir.chmod(0o755)
        shutil.rmtree(src_dir)


# --- 3. a folder facesetd moves into is a plain file ----------------------------------------------------------------


@pytest.mark.slow
def test_processed_a_plain_file_holds_photos_back_and_the_daemon_stays_up(tmp_path: Path, faces_dir: Path,
                                                                          models_root: Path) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "_processed").write_bytes(b"not a folder")
    shutil.copy(faces_dir / OBAMA, inbox / "obama.jpg")
    env = _env(models_root)
    d = _start(data, env)
    d.wait_for(lambda: "photo_deferred" in d.kinds(), "the photo held back")
    d.idle()
    _alive(d)
    (held,) = _of(_events(data, env), "photo_deferred")
    assert held["reason"] == "blocked"
    assert held["error"] == ("inbox/_processed is not a folder: facesetd moves handled photos into it; move that file"
                             " away (photos wait in the inbox until then)")
    errors = [line for line in d.lines() if line.get("level") == "error"]
    assert [e["event"] for e in errors] == ["photo waits: a folder facesetd needs is blocked"]
    assert "1 photo held back: inbox/_processed is not a folder" in cli(data, "status", env=env).stdout
    assert d.terminate() == 0
    # a restart is no crash (FileExistsError on every start before) and records nothing more
    head = len(_events(data, env))
    d = _start(data, env)
    d.idle()
    _alive(d)
    assert len(_events(data, env)) == head
    # the file moved away: the photo goes through, with no restart
    (inbox / "_processed").rename(tmp_path / "was_processed")
    d.wait_for(lambda: "photo_processed" in d.kinds(), "the photo handled once the folder can be made")
    d.idle()
    _alive(d)
    assert d.terminate() == 0
    assert "Traceback" not in d.output()
    (done,) = _of(_events(data, env), "photo_processed")
    assert done["dest"] == "_processed/obama.jpg"
    _sound(data, [sha256_file(faces_dir / OBAMA)], env)


@pytest.mark.parametrize("blocked", ["inbox/_rejected", "corpus/_pool"])
def test_other_blocked_folders_hold_photos_back_through_reconcile(tmp_path: Path, faces_dir: Path,
                                                                  models_root: Path, blocked: str) -> None:
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    (data / "corpus").mkdir(parents=True)
    (data / blocked).write_bytes(b"not a folder")
    shutil.copy(faces_dir / OBAMA, data / "inbox/obama.jpg")
    env = _env(models_root)
    out = cli(data, "reconcile", env=env)
    assert f"waiting: inbox/obama.jpg is held back: {blocked} is not a folder" in out.stdout
    assert [e["kind"] for e in _events(data, env)] == ["photo_received", "photo_deferred"]
    cli(data, "reconcile", env=env)  # still blocked: nothing more recorded
    assert len(_events(data, env)) == 2
    (data / blocked).unlink()
    cli(data, "reconcile", env=env)
    kinds = [e["kind"] for e in _events(data, env)]
    assert kinds[:3] == ["photo_received", "photo_deferred", "photo_received"] and "photo_processed" in kinds
    _sound(data, [sha256_file(faces_dir / OBAMA)], env)


def test_a_quarantine_into_an_area_that_is_a_plain_file_fails_its_move(tmp_path: Path) -> None:
    """corpus/_masked a plain file: the quarantine's move fails with its reason (move_failed), nothing crashes, and
    the faceset stays where it is."""
    from helpers import quarantine

    from state import events as ev

    data = tmp_path / "data"
    pipeline = open_pipeline(data)
    faces = pipeline.config.corpus_dir / "faceset_001/faces"
    faces.mkdir(parents=True)
    (faces / "a.png").write_bytes(b"a face")
    pipeline.log.append([ev.FacesetCreated(faceset="faceset_001", reason="test")])
    (pipeline.config.corpus_dir / "_masked").write_bytes(b"not a folder")
    quarantine(pipeline, "faceset_001")
    failed = [se.event for se in pipeline.log.iter_all() if isinstance(se.event, ev.MoveFailed)]
    assert len(failed) == 1
    assert failed[0].error == ("_masked/faceset_001 cannot be made: a file that is not a folder is in its way"
                               " (_masked)")
    assert (faces / "a.png").read_bytes() == b"a face"
    assert not pipeline.state.pending_decisions()  # nothing left to retry on every turn
