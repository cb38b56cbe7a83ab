"""One writer per data folder: an flock(2) lock on `<state>/facesetd.lock`, beside the event log.

Why beside the log: the log is what two writers must not share. The corpus, the inbox moves and the
projections all follow from it, and `paths.state` is the one folder every writer has in common even
when `paths.corpus` or `paths.inbox` point elsewhere. (A systemd unit can write there, too.)

- `facesetd run` takes the lock without waiting; when it is held it stops with one line naming the holder.
- Writing one-shot verbs (reconcile, rebuild, restore, immich poll) wait up to `--wait` seconds for it.
- Read-only verbs (status, events, config, doctor, models) take no lock and work while the daemon runs.

The holder writes "PID VERB" into the file so that the others can name it. The kernel drops an flock
when its holder dies, kill -9 included, so a leftover file never blocks anyone; the file itself is
never deleted (deleting a lock file lets two processes lock two different files).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from state.errors import FacesetdError

LOCK_FILE = "facesetd.lock"
DEFAULT_WAIT_S = 10.0  # how long writing one-shot verbs wait for the lock unless --wait says otherwise
POLL_S = 0.1  # how often a waiting verb tries the lock again
STOP_IT = "stop it first"


class DataFolderBusy(FacesetdError):
    """Another facesetd process holds the data folder's lock; the message names it and what to do."""

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as the holder wrote it (pid None when it could not be read)."""

    pid: int | None
    verb: str

    def describe(self) -> str:
        return f"pid {self.pid}, {self.verb}" if self.pid is not None else "pid unknown"


def parse_holder(text: str) -> Holder | None:
    """The holder from the lock file's text "PID VERB", or None when it is empty or not ours."""
    parts = text.split(maxsplit=1)
    if not parts or not parts[0].isdigit():
        return None
    return Holder(int(parts[0]), parts[1].strip() if len(parts) > 1 else "?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def add_wait_argument(parser: argparse.ArgumentParser) -> None:
    """`--wait SECONDS` for a writing one-shot verb."""
    parser.add_argument(
        "--wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
        help=f"how long to wait for another facesetd using the data folder, and for the event log's write "
             f"lock (default {DEFAULT_WAIT_S:g}; 0 = do not wait)",
    )


class DataLock:
    """The data folder's lock. `acquire()` takes it or raises DataFolderBusy; `close()` lets it go."""

    def __init__(self, state_dir: Path, where: Path | None = None) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.where = Path(where) if where is not None else Path(state_dir)  # what the message calls it
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, verb: str, wait_s: float = 0.0, daemon_hint: str = STOP_IT, *,
                not_for_daemon: bool = False) -> None:
        """Take the lock for `verb`, trying for up to `wait_s` seconds.

        When another process keeps it, raise DataFolderBusy naming that process; `daemon_hint` is what
        the message advises when the holder is the resident daemon. With `not_for_daemon`, a holder that is
        the resident daemon is not waited for (it does not end by itself); a one-shot verb is."""
        if self.fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise FacesetdError(f"cannot open the lock file {self.path}: {e.strerror}") from e
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left > 0 and not_for_daemon and self.holder(fd).verb == "run":
                    left = 0
                if left <= 0:
                    holder = self.holder(fd)
                    os.close(fd)
                    waited = wait_s - max(0.0, deadline - time.monotonic())
                    raise DataFolderBusy(self._busy_message(holder, verb, waited, daemon_hint), holder) from None
                time.sleep(min(POLL_S, left))
        # Ours now: say who we are (truncate first, a dead holder's line may still be there).
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {verb}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds without its line (a waiting verb then names no holder)
            pass
        self.fd = fd

    def holder(self, fd: int | None = None) -> Holder:
        """Who holds the lock, read from the file (a new holder writes its line right after locking)."""
        own = fd is None
        if own:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return Holder(None, "?")
        assert fd is not None
        try:
            found = None
            for _ in range(10):  # a holder that just took the lock may not have written its line yet
                found = parse_holder(os.pread(fd, 256, 0).decode(errors="replace"))
                if found is not None and _alive(found.pid):  # type: ignore[arg-type]
                    return found
                time.sleep(0.05)
            return found or Holder(None, "?")
        finally:
            if own:
                os.close(fd)

    def _busy_message(self, holder: Holder, verb: str, wait_s: float, daemon_hint: str) -> str:
        if holder.verb == "run":
            advice = daemon_hint
        else:  # a one-shot verb: it ends by itself
            advice = "wait for it to finish" + ("" if verb == "run" else ", or give a longer --wait")
        waited = f" (waited {wait_s:.3g} s)" if wait_s >= 0.5 else ""  # a daemon holder is not waited for
        return f"another facesetd ({holder.describe()}) is using {self.where}{waited}; {advice}"

    def close(self) -> None:
        """Let the lock go (it also goes when the process ends, however it ends)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)  # no stale line for the next reader
        finally:
            os.close(fd)  # closing the last descriptor drops the flock
