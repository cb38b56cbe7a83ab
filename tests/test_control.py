"""Corrections from the shell beside the running daemon (daemon/control.py): the real daemon as a subprocess, the
real CLI in another process, real photos and models. Each verb is handed to the daemon through its control socket,
prints the same line as with the daemon stopped, within 2 s, and its event is in the log; `review` says at once
where the daemon really serves the pages."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess
from helpers import cli, projections
from invariants import log_gapless, manifest_entries_exist, rebuild_identical
from PIL import Image

pytestmark = pytest.mark.slow

YEARS = {"obama.jpg": 2008, "obama1.jpg": 2009, "obama2.jpg": 2010, "obama3.jpg": 2011}
FAST_S = 2.0  # what the issue asks of a correction beside the daemon, the CLI's own start included


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


def dated_copy(source: Path, year: int, dest: Path) -> None:
    """A copy of `source` with EXIF DateTimeOriginal in `year` (what era slotting reads)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"{year}:06:01 12:00:00"}
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    dest.write_bytes(buf.getvalue())


def timed(data: Path, *args: str, env: dict[str, str], check: bool = True) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = cli(data, *args, env=env, check=check)
    return proc, time.monotonic() - t0


def recorded(out: str) -> int:
    found = re.search(r"recorded as event (\d+)", out)
    assert found, out
    return int(found.group(1))


def kind_at(d: DaemonProcess, position: int) -> str:
    (found,) = [e["kind"] for e in d.events() if e["position"] == position]
    return found


def test_every_correction_goes_through_the_running_daemon(tmp_path: Path, faces_dir: Path,
                                                           env: dict[str, str]) -> None:
    data = tmp_path / "data"
    ids = faces_dir / "identities"
    for name, year in YEARS.items():
        dated_copy(ids / "obama" / name, year, data / "inbox" / "faceset_001" / name)
    for name in ("biden.jpg", "biden2.jpg"):  # unseeded: two faces wait in the pool
        (data / "inbox" / name).write_bytes((ids / "biden" / name).read_bytes())
    # port 0: the daemon binds a free port, which only it knows (the configured address says 0)
    d = DaemonProcess(data, env={**env, "FACESETD_REVIEW_LISTEN": "127.0.0.1:0"}).start()
    assert d.proc is not None
    try:
        d.idle()
        sock = data / "state" / "facesetd.sock"
        assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600

        # review: at once, the address the daemon bound, which serves the pages
        proc, took = timed(data, "review", env=env)
        assert took < 1.0 + 0.5, took  # the interpreter's start on a loaded 2-core machine, then one question
        url = re.search(r"serves the review pages at (http://127\.0\.0\.1:(\d+)/)", proc.stdout)
        assert url and url.group(2) != "0", proc.stdout
        with urllib.request.urlopen(url.group(1), timeout=10) as page:
            assert page.status == 200 and b"faceset_001" in page.read()

        proc, took = timed(data, "label", "faceset_001", "Barack Obama", env=env)
        assert took < FAST_S and proc.stdout.startswith("labelled faceset_001 'Barack Obama' (recorded as event ")
        assert kind_at(d, recorded(proc.stdout)) == "faceset_labelled"
        assert json.loads((data / "corpus/faceset_001/manifest.json").read_text())["label"] == "Barack Obama"

        pooled = sorted(p.stem for p in (data / "corpus/_pool").glob("*.png"))
        assert len(pooled) == 2
        proc, took = timed(data, "promote", *pooled, env=env)
        assert took < FAST_S and "promoted 2 pool faces to faceset_002" in proc.stdout
        promotion = recorded(proc.stdout)
        assert kind_at(d, promotion) == "faceset_promoted"

        # a promotion whose faceset changed: restore refuses with the why, from the daemon, in one line
        proc, took = timed(data, "move", pooled[0], "--to", "faceset_001", env=env)
        assert took < FAST_S and proc.stdout.startswith(f"moved {pooled[0]} to faceset_001 (recorded as event ")
        moved = recorded(proc.stdout)
        assert kind_at(d, moved) == "face_moved" and (data / "corpus/faceset_001/faces" / f"{pooled[0]}.png").is_file()
        refused, took = timed(data, "restore", str(promotion), env=env, check=False)
        assert refused.returncode == 1 and took < FAST_S
        assert refused.stderr.strip() == (
            f"facesetd: error: faceset_002 changed since its promotion (event {promotion}): 1 face left it; restore"
            " puts back only a faceset as its promotion made it: restore those changes first (`facesetd events`"
            " lists them), or send its faces to the pool one by one (`facesetd move FACE --to pool`)")
        # undo the move, then the promotion restores
        proc, took = timed(data, "restore", str(moved), env=env)
        assert took < FAST_S and proc.stdout.startswith(f"restored event {moved} (recorded as event ")
        proc, took = timed(data, "restore", str(promotion), env=env)
        assert took < FAST_S and kind_at(d, recorded(proc.stdout)) == "decision_reverted"
        assert sorted(p.stem for p in (data / "corpus/_pool").glob("*.png")) == pooled

        proc, took = timed(data, "eras", "split", "faceset_001", "--years", "10", env=env)
        assert took < FAST_S and proc.stdout.splitlines()[0] == "faceset_001: 1 era bucket of 10 years"
        assert "4 anchor(s): " in proc.stdout
        assert kind_at(d, recorded(proc.stdout)) == "eras_split"

        d.idle()
        before = projections(data / "corpus")
        proc, took = timed(data, "rebuild", env=env)
        assert took < FAST_S and proc.stdout == f"rebuilt projections from {d.head()} events\n"
        assert projections(data / "corpus") == before  # the daemon's rebuild is byte-identical

        # bad input through the socket: one line back, and the daemon goes on
        bad = socket.socket(socket.AF_UNIX)
        bad.connect(str(sock))
        bad.sendall(b'{"action": "label", "form": {"faceset": 7}}\n')
        assert b"a form of strings" in bad.recv(4096)
        bad.close()
        assert d.proc.poll() is None
    finally:
        assert d.terminate() == 0
    assert not (data / "state" / "facesetd.sock").exists()  # a clean stop removes it
    assert manifest_entries_exist(data) == [] and log_gapless(data) == []
    assert rebuild_identical(data, env) == []


PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("refused by the file's mode")
    sys.exit()
try:
    s.sendall(b'{"action": "rebuild", "form": {}}\\n')
    print("answered" if s.recv(4096) else "closed without an answer")
except (ConnectionResetError, BrokenPipeError):  # closed before or while the request went out
    print("closed without an answer")
"""


def test_another_user_cannot_use_the_control_socket(env: dict[str, str]) -> None:
    """Two locks: the socket's mode 0600, and the daemon's uid check (SO_PEERCRED) behind it."""
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root (to act as `nobody`) and a system python3 that `nobody` can run")
    top = Path(tempfile.mkdtemp(prefix="facesetd-control-"))  # /tmp/pytest-of-root is 0700: nobody could not pass
    try:
        top.chmod(0o755)
        data = top / "data"
        d = DaemonProcess(data, env=env, umask=0o022).start()
        sock = data / "state" / "facesetd.sock"

        def as_nobody() -> str:
            out = subprocess.run(["/usr/bin/python3", "-c", PROBE, str(sock)], user="nobody", capture_output=True,
                                 text=True, timeout=30, cwd="/")
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        try:
            assert as_nobody() == "refused by the file's mode"
            sock.chmod(0o666)  # a socket opened up by hand: the daemon still answers only its own user
            assert as_nobody() == "closed without an answer"
            d.wait_for(lambda: "a connection from another user refused" in d.output(), "the refusal logged", 10)
        finally:
            assert d.terminate() == 0
    finally:
        shutil.rmtree(top)


def test_a_daemon_killed_leaves_a_socket_the_next_one_replaces(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    d = DaemonProcess(data, env=env).start()
    d.kill()  # kill -9: the socket file stays; nobody answers on it
    assert (data / "state" / "facesetd.sock").exists()
    # without a daemon the verb takes the lock and works here, as always
    proc = cli(data, "rebuild", env=env)
    assert proc.stdout.startswith("rebuilt projections from ")
    d.log_file.unlink()
    again = DaemonProcess(data, env=env).start()
    try:
        assert cli(data, "rebuild", env=env, timeout=30).stdout.startswith("rebuilt projections from ")
    finally:
        assert again.terminate() == 0


def test_the_socket_path_may_be_longer_than_sun_path(tmp_path: Path, env: dict[str, str]) -> None:
    """A data folder deep enough that state/facesetd.sock passes sockaddr_un's 108 bytes still works."""
    data = tmp_path / ("d" * 60) / ("e" * 60) / "data"
    assert len(str(data / "state" / "facesetd.sock")) > 108
    data.parent.mkdir(parents=True)
    d = DaemonProcess(data, env=env).start()
    try:
        proc = cli(data, "rebuild", env=env, timeout=30)
        assert proc.stdout.startswith("rebuilt projections from ")
        assert "facesetd running" in d.output() and d.proc is not None and d.proc.poll() is None
    finally:
        assert d.terminate() == 0



def test_a_daemon_that_cannot_serve_the_socket_still_runs(tmp_path: Path, env: dict[str, str]) -> None:
    """A socket path the daemon cannot bind (here a plain file sits there; on some network mounts sockets cannot be
    made at all) is logged once; the daemon runs, and a correction beside it says in one line what is wrong."""
    data = tmp_path / "data"
    (data / "state").mkdir(parents=True)
    (data / "state" / "facesetd.sock").write_text("not a socket\n")
    d = DaemonProcess(data, env=env).start()
    try:
        assert any(line.get("event", "").startswith("control socket not served") for line in d.lines())
        proc = cli(data, "label", "faceset_001", "Ann", env=env, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith(
            f"facesetd: error: facesetd run (pid {d.proc.pid}) holds this data folder but does not answer on")
        assert d.proc is not None and d.proc.poll() is None
    finally:
        assert d.terminate() == 0
    assert (data / "state" / "facesetd.sock").read_text() == "not a socket\n"  # never deleted
