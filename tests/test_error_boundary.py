"""The one error boundary (daemon/runner.py), on the user's path: the real daemon as a subprocess, real photos, a
real full disk (a small tmpfs) and a real read-only remount. After each: the daemon stayed up, every photo is
accounted for once, every manifest entry is on disk, and `rebuild` is byte-identical."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from daemon_proc import DaemonProcess
from helpers import cli
from invariants import manifest_entries_exist, photos_accounted_once, rebuild_identical, sha256_file

IDS = "identities"
PHOTOS = (("obama", "obama.jpg"), ("obama", "obama1.jpg"), ("biden", "biden.jpg"))


def _env(models_root: Path, **extra: str) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root), **extra}


def _check(data: Path, dropped: list[str], env: dict[str, str]) -> None:
    problems = photos_accounted_once(data, dropped) + manifest_entries_exist(data) + rebuild_identical(data, env)
    assert not problems, "\n".join(problems)


def _status(data: Path, env: dict[str, str]) -> dict:
    return json.loads(cli(data, "status", "--json", env=env).stdout)


@contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here (needs root): {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


@contextmanager
def _read_only_inbox(data: Path, faces_dir: Path) -> Iterator[Path]:
    """The inbox on a tmpfs of its own holding PHOTOS, remounted read-only: the test makes it writable again."""
    with _tmpfs(data / "inbox", "64m") as inbox:
        for person, name in PHOTOS:
            shutil.copy(faces_dir / IDS / person / name, inbox / name)
        _remount(inbox, "ro")
        yield inbox


def _fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; the filler file, to delete when done."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_check_that_fails_on_one_photo_sets_it_aside_and_retry_takes_it(tmp_path: Path, faces_dir: Path,
                                                                           models_root: Path) -> None:
    data = tmp_path / "data"
    env = _env(models_root)
    d = DaemonProcess(data, {**env, "FACESETD_FAILPOINT": "route:boom"}).start()
    inbox = data / "inbox"
    shutil.copy(faces_dir / IDS / "obama" / "obama.jpg", inbox / "boom.jpg")
    shutil.copy(faces_dir / IDS / "biden" / "biden.jpg", inbox / "fine.jpg")
    d.wait_for(lambda: (inbox / "_processed" / "fine.jpg").exists(), "the other photo routed")
    d.idle()
    assert d.proc is not None and d.proc.poll() is None  # alive
    dead = [e for e in d.events() if e["kind"] == "dead_lettered"]
    assert len(dead) == 1 and dead[0]["path"] == "boom.jpg" and dead[0]["step"] == "handlers.route_photo.route_photo"
    assert "injected failure" in dead[0]["error"] and dead[0]["dest"] == "_rejected/failed/boom.jpg"
    assert (inbox / "_rejected" / "failed" / "boom.jpg").exists()
    listed = _status(data, env)["dead_letters"]
    assert [x["id"] for x in listed] == [dead[0]["position"]]
    # the review page lists it too, with its retry button
    page = requests.get(f"http://{d.env['FACESETD_REVIEW_LISTEN']}/facesets", timeout=10).text
    assert f'data-dead-letter="{dead[0]["position"]}"' in page and "injected failure" in page and ">Retry<" in page
    assert d.terminate() == 0
    lines = [json.loads(x) for x in d.output().splitlines() if x.startswith("{")]
    assert sum(1 for x in lines if x.get("event", "").startswith("dead letter")) == 1  # logged once
    # the bug fixed (the fail point gone), the user retries it beside the running daemon
    d = DaemonProcess(data, env).start()
    done = cli(data, "retry", str(dead[0]["position"]), env=env)
    assert "retried dead letter" in done.stdout
    d.wait_for(lambda: (inbox / "_processed" / "boom.jpg").exists(), "the retried photo routed")
    d.idle()
    assert _status(data, env)["dead_letters"] == []
    assert d.terminate() == 0
    _check(data, [sha256_file(faces_dir / IDS / "obama" / "obama.jpg"), sha256_file(faces_dir / IDS / "biden" / "biden.jpg")],
           env)


@pytest.mark.slow
@pytest.mark.parametrize("restart", [False, True], ids=["while-running", "restarted-on-it"])
def test_a_full_disk_pauses_the_work_and_it_goes_on_once_space_is_freed(tmp_path: Path, faces_dir: Path,
                                                                        models_root: Path, restart: bool) -> None:
    """The corpus's disk fills while the daemon runs (photos still arrive, on the inbox's own disk), or the daemon is
    restarted on the full disk (systemd's restart, a reboot): it waits, and goes on once space is freed."""
    with _tmpfs(tmp_path / "disk", "24m") as disk:
        data = disk / "data"
        env = _env(models_root)
        with _tmpfs(data / "inbox", "64m") as inbox:
            d = DaemonProcess(data, env).start()
            d.wait_for(lambda: "caught up" in d.output(), "the daemon idle")
            if restart:
                assert d.terminate() == 0
                for person, name in PHOTOS:
                    shutil.copy(faces_dir / IDS / person / name, inbox / name)
                filler = _fill(disk)
                d = DaemonProcess(data, env).start(wait=False)
                d.wait_for(lambda: "waiting for its disk" in d.output() or "work paused" in d.output(),
                           "the daemon waiting for the full disk")
            else:
                filler = _fill(disk)
                for person, name in PHOTOS:
                    shutil.copy(faces_dir / IDS / person / name, inbox / name)
                d.wait_for(lambda: "work paused" in d.output(), "the work paused for the full disk")
            time.sleep(3)
            assert d.proc is not None and d.proc.poll() is None  # alive, not crash-looping
            if not restart:
                paused = [json.loads(x) for x in d.output().splitlines() if '"work paused' in x]
                assert any("space" in p["error"] or "full" in p["error"] for p in paused), paused
                shown = _status(data, env)["paused"]  # status asks the daemon: it opens the log without writing
                assert shown and any("space" in p["error"] or "full" in p["error"] for p in shown), shown
            filler.unlink()
            d.wait_for(lambda: len(list((inbox / "_processed").glob("*.jpg"))) == len(PHOTOS),
                       "every photo routed once space is back", timeout=150)
            d.idle()
            if not restart:
                assert "work resumed" in d.output()
                assert not _status(data, env)["paused"]
            assert d.terminate() == 0
            _check(data, [sha256_file(faces_dir / IDS / p / n) for p, n in PHOTOS], env)


@pytest.mark.slow
def test_a_read_only_inbox_pauses_the_work_and_it_goes_on_once_writable(tmp_path: Path, faces_dir: Path,
                                                                        models_root: Path) -> None:
    data = tmp_path / "data"
    env = _env(models_root)
    with _read_only_inbox(data, faces_dir) as inbox:
        d = DaemonProcess(data, env).start()
        d.wait_for(lambda: "work paused" in d.output(), "the work paused for the read-only inbox")
        time.sleep(3)
        assert d.proc is not None and d.proc.poll() is None
        _remount(inbox, "rw")
        d.wait_for(lambda: len(list((inbox / "_processed").glob("*.jpg"))) == len(PHOTOS),
                   "every photo routed once the inbox is writable", timeout=150)
        d.idle()
        assert d.terminate() == 0
        _check(data, [sha256_file(faces_dir / IDS / p / n) for p, n in PHOTOS], env)
    assert os.path.isdir(data)


@pytest.mark.slow
def test_reconcile_on_a_read_only_inbox_stops_with_one_line_and_the_next_run_finishes(tmp_path: Path, faces_dir: Path,
                                                                                     models_root: Path) -> None:
    """A one-shot does not wait for a fault to clear: one line, exit 1, nothing lost; run again once fixed."""
    data = tmp_path / "data"
    env = _env(models_root)
    with _read_only_inbox(data, faces_dir) as inbox:
        done = cli(data, "reconcile", env=env, check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("facesetd: error:") and "run it again" in done.stderr
        _remount(inbox, "rw")
        cli(data, "reconcile", env=env)
        assert len(list((inbox / "_processed").glob("*.jpg"))) == len(PHOTOS)
        _check(data, [sha256_file(faces_dir / IDS / p / n) for p, n in PHOTOS], env)
