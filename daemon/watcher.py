"""Watch folders and report files once they are complete, plus moves and deletions.

watchdog reports every write, so a photo copied in slowly would be seen half-written. This module
turns watchdog's raw events into three frozen values for the consumer:

- FileReady(path): the file is complete. On inotify a close-after-write (FileClosedEvent) says so,
  confirmed after a short grace (a writer that reopens the file for each chunk closes it many times).
  Without a close event (polling observer, or a file moved in from outside the tree) the file is
  complete once its size and mtime have stayed unchanged for `settle_s`. A rename from a temporary
  name (x.jpg.part -> x.jpg, our own .x.jpg.tmp-123 -> x.jpg) is complete at once: that rename is how
  such writers say they are done.
- FileMoved(src, dest): a visible file was renamed within one watched root.
- FileDeleted(path): a visible file was deleted, or moved out of the tree or to a temporary name.

FileMoved and FileDeleted may name a path that was never reported ready (deleted while still being
written); consumers treat those as no-ops. Directories, hidden files (any path part below the root
starting with '.') and temporary names (state.names.TEMP_SUFFIXES: .part, .crdownload, .download ...) are
ignored. A symbolic link is reported ready as it is (it is made in one call; dangling or not, it is
never followed here): the consumer decides what it means; so is a FIFO, a socket or a device (never opened). The callback runs on a
watcher thread (watchdog's dispatcher or the settler's timer) and is never called concurrently;
a slow callback slows the watcher down, which is the intended back-pressure.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from state import names
from state.errors import FacesetdError

if TYPE_CHECKING:
    from .config import WatchSettings

log = structlog.get_logger("facesetd.watcher")

# Seconds a closed-after-write file must stay closed and unchanged before it counts as complete.
# Writers that append chunk by chunk (reopening each time) close the file after every chunk; a short
# grace lets the next chunk arrive first. Longer than typical chunk gaps, short enough to go unnoticed.
CLOSE_GRACE_S = 1.0

# Name endings of files still being written: one list, shared with the inbox (state.names).
TEMP_SUFFIXES = names.TEMP_SUFFIXES


# Events handed to the consumer ---------------------------------------------------------------------


@dataclass(frozen=True)
class FileReady:
    """`path` (under watched folder `root`) is complete and can be read."""

    path: Path
    root: Path


@dataclass(frozen=True)
class FileMoved:
    """A visible file moved from `src` to `dest`, both under `root`."""

    src: Path
    dest: Path
    root: Path


@dataclass(frozen=True)
class FileDeleted:
    """A visible file at `path` is gone (deleted, moved out of the tree, or renamed to a temporary name)."""

    path: Path
    root: Path


WatchEvent = FileReady | FileMoved | FileDeleted
Callback = Callable[[WatchEvent], None]


class WatchError(FacesetdError):
    """A folder cannot be watched (missing, not a folder, or the OS refused)."""


# Which paths we care about ---------------------------------------------------------------------------


def is_ignored(path: Path, root: Path) -> bool:
    """True for hidden and temporary files, judged on the parts of `path` below `root`.

    Only the parts below the root count: the default data folder itself lives under ~/.local.
    Our own atomic writes use '.<name>.tmp-<random>', which the leading dot already covers.
    """
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True  # not under this root; nothing of ours
    if not parts:
        return True
    if any(part.startswith(".") for part in parts):
        return True
    return names.is_temp_name(parts[-1])


# The settler: when is a file complete? ---------------------------------------------------------------

Signature = tuple[int, int]  # (st_size, st_mtime_ns)


@dataclass
class _Pending:
    root: Path
    deadline: float
    signature: Signature | None


class Settler:
    """Tracks files still being written; calls `on_ready(path, root)` once each has stopped changing.

    `touch()` (re)arms a path: it becomes due `settle_s` later, or `close_grace_s` later after a
    close-after-write. When due, its size and mtime are compared with those seen when it was armed;
    a change re-arms it (a write the events have not reported yet), no change makes it ready.
    One timer thread does the checks, so there is no thread per file.

    All state, and the `on_ready` call, are guarded by `lock`, which the Watcher shares so that a
    deletion and a readiness check cannot interleave.
    """

    def __init__(
        self,
        settle_s: float,
        on_ready: Callable[[Path, Path], None],
        *,
        close_grace_s: float = CLOSE_GRACE_S,
        lock: threading.RLock | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle_s = settle_s
        self.close_grace_s = close_grace_s
        self._on_ready = on_ready
        self._clock = clock
        self.lock = lock or threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._pending: dict[Path, _Pending] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None

    # Called from event handlers ------------------------------------------------------------------
    def touch(self, path: Path, root: Path, *, closed: bool = False) -> None:
        """The file changed (or was closed after writing, `closed=True`): wait before calling it ready."""
        delay = self.close_grace_s if closed else self.settle_s
        signature = _signature(path)
        with self._wake:
            self._pending[path] = _Pending(root, self._clock() + delay, signature)
            self._wake.notify()

    def forget(self, path: Path) -> bool:
        """Stop tracking `path` (deleted or moved away); True if it was pending."""
        with self._wake:
            return self._pending.pop(path, None) is not None

    def rename(self, src: Path, dest: Path) -> bool:
        """A pending file was renamed: keep waiting under its new name. True if `src` was pending."""
        with self._wake:
            entry = self._pending.pop(src, None)
            if entry is None:
                return False
            entry.deadline = self._clock() + self.settle_s
            self._pending[dest] = entry
            self._wake.notify()
            return True

    def pending(self) -> int:
        """How many files are waiting to settle.

        Read without the lock (len() of a dict is atomic in CPython): a status thread must not wait
        behind a callback that is blocked on a full consumer queue.
        """
        return len(self._pending)

    # The timer thread ------------------------------------------------------------------------------
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="facesetd-settler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the timer thread and wait for it; pending files are dropped (a rescan finds them)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        with self._wake:
            while not self._stopping:
                now = self._clock()
                for path in [p for p, e in self._pending.items() if e.deadline <= now]:
                    self._check(path, now)
                upcoming = [e.deadline for e in self._pending.values()]
                timeout = max(0.0, min(upcoming) - self._clock()) if upcoming else None
                self._wake.wait(timeout)

    def _check(self, path: Path, now: float) -> None:
        entry = self._pending[path]
        try:
            st = path.lstat()
        except FileNotFoundError:
            del self._pending[path]  # gone before it settled; the delete event speaks for it
            return
        except OSError as e:
            # A share may be briefly unreachable: keep the file and look again later.
            log.warning("cannot stat pending file, will retry", path=str(path), error=str(e))
            entry.deadline = now + self.settle_s
            return
        if stat.S_ISLNK(st.st_mode):
            # A link is made whole in one call: ready as it is, wherever (or whether) it points.
            # The consumer decides what a link means; dropping it here left it unreported forever.
            del self._pending[path]
            self._call(path, entry.root)
            return
        if stat.S_ISDIR(st.st_mode):
            del self._pending[path]  # a folder took its name: what it holds gets events of its own
            return
        if not _is_regular(st.st_mode):
            # A FIFO, a socket, a device: made whole in one call and never read here (opening a FIFO blocks);
            # the consumer records why it is refused. Dropping it here left it unrecorded forever.
            del self._pending[path]
            self._call(path, entry.root)
            return
        signature = (st.st_size, st.st_mtime_ns)
        if signature != entry.signature:
            entry.signature = signature
            entry.deadline = now + self.settle_s
            return
        del self._pending[path]
        self._call(path, entry.root)

    def _call(self, path: Path, root: Path) -> None:
        try:
            self._on_ready(path, root)
        except Exception:
            log.exception("watch callback failed", path=str(path))


def _signature(path: Path) -> Signature | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


# watchdog -> our events ----------------------------------------------------------------------------


class _RootHandler(FileSystemEventHandler):
    """Translates watchdog events under one root; one instance per watched root."""

    def __init__(self, watcher: Watcher, root: Path) -> None:
        super().__init__()
        self._watcher = watcher
        self._root = root

    def dispatch(self, event: FileSystemEvent) -> None:
        # An exception here would end watchdog's dispatcher thread and silently stop all watching.
        try:
            self._watcher._handle(event, self._root)
        except Exception:
            log.exception("watch event failed", event=type(event).__name__, path=_text(event.src_path))


def _text(p: bytes | str) -> str:
    return os.fsdecode(p)


class Watcher:
    """Watches `roots` recursively and calls `callback` with FileReady, FileMoved and FileDeleted.

    inotify by default; `polling=True` uses watchdog's polling observer (network shares, WSL /mnt/*),
    which polls every `poll_interval_s` and has no close events, so readiness there is by `settle_s`.
    If inotify cannot start for lack of watches or instances, it falls back to polling (and says so).
    Files already present at start() are not reported; a rescan is the consumer's business.
    """

    def __init__(
        self,
        roots: Iterable[Path | str],
        callback: Callback,
        *,
        polling: bool = False,
        poll_interval_s: float = 1.0,
        settle_s: float = 2.0,
        close_grace_s: float = CLOSE_GRACE_S,
    ) -> None:
        # Resolved, so that event paths (absolute, from the resolved watch) compare with the roots.
        self.roots = tuple(dict.fromkeys(Path(r).expanduser().resolve() for r in roots))
        self.polling = polling
        self.poll_interval_s = poll_interval_s
        self._callback = callback
        self._lock = threading.RLock()
        self._settler = Settler(settle_s, self._ready, close_grace_s=close_grace_s, lock=self._lock)
        self._observer: BaseObserver | None = None

    @classmethod
    def from_settings(
        cls, roots: Iterable[Path | str], callback: Callback, settings: WatchSettings
    ) -> Watcher:
        """Build from the [watch] config section."""
        return cls(
            roots,
            callback,
            polling=settings.polling,
            poll_interval_s=settings.poll_interval_s,
            settle_s=settings.settle_s,
        )

    # Lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching. Raises WatchError when a root is missing or the OS refuses to watch it."""
        for root in self.roots:
            if not root.is_dir():
                raise WatchError(f"cannot watch {root}: not an existing folder")
        self._settler.start()
        try:
            self._observer = self._start_observer(self.polling)
        except OSError as e:
            if self.polling or e.errno not in (errno.ENOSPC, errno.EMFILE):
                self._settler.stop()
                raise WatchError(f"cannot watch {', '.join(map(str, self.roots))}: {e}") from e
            # ENOSPC: fs.inotify.max_user_watches reached; EMFILE: max_user_instances reached.
            log.warning(
                "inotify limit reached, falling back to polling (raise fs.inotify.max_user_watches)",
                error=str(e),
            )
            self.polling = True
            self._observer = self._start_observer(True)
        log.info("watching", roots=[str(r) for r in self.roots], polling=self.polling)

    def _start_observer(self, polling: bool) -> BaseObserver:
        observer: BaseObserver
        if polling:
            # lstat, as inotify does: a link is seen as a link (also a dangling one) and never followed
            # into a folder elsewhere.
            observer = PollingObserverVFS(os.lstat, os.scandir, polling_interval=self.poll_interval_s)
        else:
            from watchdog.observers.inotify import InotifyObserver

            observer = InotifyObserver()
        observer.name = "facesetd-watch"
        for root in self.roots:
            observer.schedule(_RootHandler(self, root), str(root), recursive=True)
        try:
            observer.start()
        except BaseException:
            observer.unschedule_all()
            raise
        return observer

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop watching and join the observer and settler threads. Files still settling are dropped."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout)
        self._settler.stop(timeout)

    def settle(self, path: Path) -> None:
        """Report `path` ready once it has stopped changing for `settle_s`, as if it had just been written.

        For a file found by a listing rather than by an event (the daemon's start-up inbox listing) whose
        writer may still be at work: it was last changed a moment ago, so taking it now could take half a file.
        """
        root = next((r for r in self.roots if path.is_relative_to(r)), None)
        if root is not None and not is_ignored(path, root):
            self._settler.touch(path, root)

    def pending(self) -> int:
        """Files seen but not yet complete (for `facesetd status` and STATUS=)."""
        return self._settler.pending()

    def is_alive(self) -> bool:
        """True while every root is watched.

        watchdog ends a root's emitter thread when the root itself is deleted or unmounted, while the
        observer thread runs on; so this checks the emitters too. The daemon loop should check it
        now and then and restart the watcher (or exit non-zero and let systemd restart it).
        """
        observer = self._observer
        if observer is None or not observer.is_alive() or not self._settler.is_alive():
            return False
        emitters = list(observer.emitters)
        return len(emitters) == len(self.roots) and all(e.is_alive() for e in emitters)

    def __enter__(self) -> Watcher:  # not typing.Self: that needs 3.11, and we support 3.10
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Translation (watchdog's dispatcher thread) -----------------------------------------------------
    def _handle(self, event: FileSystemEvent, root: Path) -> None:
        if event.is_directory:
            # Files inside a moved or created folder get their own (synthetic) events from watchdog.
            return
        src = Path(_text(event.src_path))
        if isinstance(event, FileMovedEvent):
            self._moved(src, Path(_text(event.dest_path)), root)
            return
        if is_ignored(src, root):
            return
        if isinstance(event, FileClosedEvent):
            self._settler.touch(src, root, closed=True)
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            self._settler.touch(src, root)
        elif isinstance(event, FileDeletedEvent):
            with self._lock:
                self._settler.forget(src)
                self._emit(FileDeleted(src, root))
        # Opened, closed-without-write and attribute events say nothing about completeness:
        # readers (the daemon itself among them) open files all the time.

    def _moved(self, src: Path, dest: Path, root: Path) -> None:
        src_seen = not is_ignored(src, root)
        dest_seen = bool(dest.parts) and not is_ignored(dest, root)
        with self._lock:
            if src_seen and dest_seen:
                # Still being written? Keep waiting under the new name, and tell the consumer anyway.
                self._settler.rename(src, dest)
                self._emit(FileMoved(src, dest, root))
            elif dest_seen:
                # temp -> final name: the writer's way of saying the file is complete.
                self._settler.forget(src)
                self._settler.forget(dest)
                self._emit(FileReady(dest, root))
            elif src_seen:
                self._settler.forget(src)
                self._emit(FileDeleted(src, root))
            else:
                self._settler.forget(src)

    def _ready(self, path: Path, root: Path) -> None:
        self._emit(FileReady(path, root))

    def _emit(self, event: WatchEvent) -> None:
        with self._lock:
            try:
                self._callback(event)
            except Exception:
                log.exception("watch callback failed", watch_event=repr(event))
