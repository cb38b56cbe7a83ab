"""daemon.watcher with real files in tmp, on inotify and on the polling observer."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.watcher import (
    FileDeleted,
    FileMoved,
    FileReady,
    Settler,
    Watcher,
    WatchError,
    WatchEvent,
    is_ignored,
)

CHUNKS = 5
CHUNK_GAP_S = 0.3
# Polling: poll often, and settle well above the gap between chunks (a writer pausing longer than
# settle_s is indistinguishable from a finished one without close events).
Mode = dict[str, Any]
POLL: Mode = {"polling": True, "poll_interval_s": 0.1, "settle_s": 0.8}
INOTIFY: Mode = {"polling": False, "settle_s": 2.0}
MODES = {"inotify": INOTIFY, "polling": POLL}


class Collector:
    """The watcher callback: records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[float, WatchEvent]] = []
        self._cond = threading.Condition()

    def __call__(self, event: WatchEvent) -> None:
        with self._cond:
            self.events.append((time.monotonic(), event))
            self._cond.notify_all()

    def wait_for(self, match: Callable[[WatchEvent], bool], timeout: float = 5.0) -> tuple[float, WatchEvent]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, event in self.events:
                    if match(event):
                        return at, event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching event within {timeout}s; got {self.only()}")
                self._cond.wait(left)

    def only(self) -> list[WatchEvent]:
        with self._cond:
            return [e for _, e in self.events]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "inbox"
    r.mkdir()
    return r.resolve()


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> Mode:
    return MODES[request.param]


@pytest.fixture
def watching(root: Path, mode: Mode) -> Iterator[tuple[Watcher, Collector]]:
    got = Collector()
    w = Watcher([root], got, **mode)
    w.start()
    yield w, got
    w.stop()


def _ready_for(path: Path) -> Callable[[WatchEvent], bool]:
    return lambda e: isinstance(e, FileReady) and e.path == path


def _write_kept_open(path: Path, on_chunk: Callable[[int], None]) -> None:
    with open(path, "wb") as f:
        for i in range(CHUNKS):
            f.write(os.urandom(4096))
            f.flush()
            on_chunk(i)
            if i < CHUNKS - 1:
                time.sleep(CHUNK_GAP_S)


def _write_reopening(path: Path, on_chunk: Callable[[int], None]) -> None:
    for i in range(CHUNKS):
        with open(path, "ab") as f:
            f.write(os.urandom(4096))
        on_chunk(i)
        if i < CHUNKS - 1:
            time.sleep(CHUNK_GAP_S)


@pytest.mark.parametrize("writer", [_write_kept_open, _write_reopening], ids=["kept-open", "reopened"])
def test_slow_write_is_ready_once_after_the_last_chunk(
    watching: tuple[Watcher, Collector], root: Path, writer: Callable[[Path, Callable[[int], None]], None]
) -> None:
    w, got = watching
    path = root / "photo.jpg"
    last_chunk_at = 0.0

    def on_chunk(i: int) -> None:
        nonlocal last_chunk_at
        assert not any(isinstance(e, FileReady) for e in got.only()), f"ready before chunk {i + 1}"
        last_chunk_at = time.monotonic()

    writer(path, on_chunk)
    ready_at, _ = got.wait_for(_ready_for(path), timeout=6.0)
    assert ready_at > last_chunk_at
    assert w.pending() == 0
    time.sleep(0.6)  # a second FileReady would show up here (another close or poll)
    readies = [e for e in got.only() if isinstance(e, FileReady)]
    assert readies == [FileReady(path, root)]
    assert path.stat().st_size == CHUNKS * 4096


def test_file_in_a_new_subfolder(watching: tuple[Watcher, Collector], root: Path) -> None:
    _w, got = watching
    sub = root / "2026" / "trip"
    sub.mkdir(parents=True)
    time.sleep(0.3)  # inotify adds the watch for a new folder asynchronously
    (sub / "a.jpg").write_bytes(b"x" * 100)
    got.wait_for(_ready_for(sub / "a.jpg"))


def test_move_gives_file_moved(root: Path, mode: Mode) -> None:
    src, dest = root / "a.jpg", root / "b.jpg"
    src.write_bytes(b"x" * 100)
    got = Collector()
    with Watcher([root], got, **mode):
        src.rename(dest)
        got.wait_for(lambda e: e == FileMoved(src, dest, root))
        time.sleep(0.3)
    assert not any(isinstance(e, (FileReady, FileDeleted)) for e in got.only())


def test_folder_move_gives_file_moved_for_its_files(root: Path, mode: Mode) -> None:
    (root / "old").mkdir()
    (root / "old" / "a.jpg").write_bytes(b"x")
    got = Collector()
    with Watcher([root], got, **mode):
        (root / "old").rename(root / "new")
        got.wait_for(lambda e: e == FileMoved(root / "old" / "a.jpg", root / "new" / "a.jpg", root))


def test_deleting_a_root_is_noticed(root: Path, mode: Mode) -> None:
    got = Collector()
    with Watcher([root], got, **mode) as w:
        assert w.is_alive()
        root.rmdir()
        deadline = time.monotonic() + 3.0
        while w.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not w.is_alive()


def test_delete_gives_file_deleted(root: Path, mode: Mode) -> None:
    path = root / "a.jpg"
    path.write_bytes(b"x" * 100)
    got = Collector()
    with Watcher([root], got, **mode):
        path.unlink()
        got.wait_for(lambda e: e == FileDeleted(path, root))


def test_hidden_and_temporary_files_are_ignored(watching: tuple[Watcher, Collector], root: Path) -> None:
    w, got = watching
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / "movie.mp4.part").write_bytes(b"x")
    (root / "photo.jpg.crdownload").write_bytes(b"x")
    (root / "upload.TMP").write_bytes(b"x")
    (root / ".cache").mkdir()
    (root / ".cache" / "thumb.jpg").write_bytes(b"x")
    (root / "marker.jpg").write_bytes(b"x")  # a visible file, so we know when the others were seen
    got.wait_for(_ready_for(root / "marker.jpg"))
    assert got.only() == [FileReady(root / "marker.jpg", root)]
    assert w.pending() == 0


def test_rename_from_a_temporary_name_is_ready_at_once(
    watching: tuple[Watcher, Collector], root: Path
) -> None:
    _w, got = watching
    tmp = root / ".face.jpg.tmp-1234"  # how our own atomic writes look
    tmp.write_bytes(b"x" * 100)
    # Let a poll see the temporary file first; if created and renamed between two polls, the
    # polling observer sees only a new file, which then settles like any other.
    time.sleep(0.3)
    start = time.monotonic()
    tmp.rename(root / "face.jpg")
    at, _ = got.wait_for(_ready_for(root / "face.jpg"))
    # No settling wait: well under settle_s (plus one poll for the polling observer).
    assert at - start < 0.6
    (root / "clip.mp4.part").write_bytes(b"y")
    (root / "clip.mp4.part").rename(root / "clip.mp4")
    got.wait_for(_ready_for(root / "clip.mp4"))


def test_rename_to_a_temporary_name_is_a_deletion(root: Path, mode: Mode) -> None:
    path = root / "a.jpg"
    path.write_bytes(b"x")
    got = Collector()
    with Watcher([root], got, **mode):
        path.rename(root / "a.jpg.tmp")
        got.wait_for(lambda e: e == FileDeleted(path, root))


def test_stop_joins_all_threads(root: Path, mode: Mode) -> None:
    before = set(threading.enumerate())
    w = Watcher([root], Collector(), **mode)
    w.start()
    assert w.is_alive()
    (root / "a.jpg").write_bytes(b"x")  # something pending while we stop
    t0 = time.monotonic()
    w.stop()
    assert time.monotonic() - t0 < 3.0
    assert not w.is_alive()
    assert set(threading.enumerate()) <= before


def test_a_failing_callback_does_not_stop_watching(root: Path) -> None:
    got = Collector()

    def flaky(event: WatchEvent) -> None:
        got(event)
        raise RuntimeError("consumer bug")

    with Watcher([root], flaky, **INOTIFY) as w:
        (root / "a.jpg").write_bytes(b"x")
        got.wait_for(_ready_for(root / "a.jpg"))
        (root / "b.jpg").write_bytes(b"x")
        got.wait_for(_ready_for(root / "b.jpg"))
        assert w.is_alive()


def test_missing_root_is_a_watch_error(tmp_path: Path) -> None:
    with pytest.raises(WatchError, match="not an existing folder"):
        Watcher([tmp_path / "nope"], Collector()).start()


def test_inotify_limit_falls_back_to_polling(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from watchdog.observers.inotify import InotifyObserver

    def refuse(self: InotifyObserver) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(InotifyObserver, "start", refuse)
    got = Collector()
    with Watcher([root], got, polling=False, poll_interval_s=0.1, settle_s=0.3) as w:
        assert w.polling
        (root / "a.jpg").write_bytes(b"x")
        got.wait_for(_ready_for(root / "a.jpg"))


def test_is_ignored_judges_only_parts_below_the_root(tmp_path: Path) -> None:
    root = tmp_path / ".local" / "share" / "facesetd"
    assert not is_ignored(root / "inbox" / "a.jpg", root)
    assert is_ignored(root / "inbox" / ".a.jpg.tmp-xyz", root)
    assert is_ignored(root / ".trash" / "a.jpg", root)
    assert is_ignored(tmp_path / "elsewhere.jpg", root)


def test_settler_rearms_on_change_and_fires_once(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    fired: list[Path] = []
    s = Settler(0.2, lambda p, r: fired.append(p))
    s.start()
    try:
        s.touch(path, tmp_path)
        time.sleep(0.1)
        path.write_bytes(b"xy")  # a change the events have not reported: the check must notice it
        time.sleep(0.15)
        assert fired == [] and s.pending() == 1
        time.sleep(0.35)
        assert fired == [path] and s.pending() == 0
    finally:
        s.stop()
