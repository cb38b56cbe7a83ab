"""What kind of fault an error is, for the one error boundary (daemon/runner.py, handlers/dispatch.py).

- transient: the file system refuses for now (full, read-only, no permission, I/O error, a share gone away). The
  work is paused with a backoff and tried again; nothing is skipped, and it goes on by itself once the fault is
  fixed.
- the log's own (LogBusy aside): SQLite cannot read or write the event log. Nothing can go on safely; the
  process ends with one line (state.errors.LogError).
- anything else: a fault of one input (a file, an event) or a bug met by it. The input is dead-lettered (recorded,
  moved aside where it is a file) and the follower goes on with the rest; `facesetd retry` tries it again.
"""

from __future__ import annotations

import errno
import sqlite3

# errno values that say "not now" rather than "not this input": the work waits for them to clear.
TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC,  # disk full
    errno.EDQUOT,  # quota exceeded
    errno.EROFS,  # read-only file system (a remount ro after an error, a snapshot)
    errno.EACCES, errno.EPERM,  # permissions changed under us
    errno.EIO,  # a failing disk or a network share's hiccup
    errno.EAGAIN, errno.EBUSY, errno.ETXTBSY,
    errno.ENOMEM,
    errno.ESTALE, errno.ENOTCONN, errno.EHOSTDOWN, errno.ETIMEDOUT,  # network shares
})


# SQLite's result codes that say the same of the log's own file: full, read-only, an I/O error (an OperationalError
# carries its code as `sqlite_errorcode`; the primary code is the low byte). Anything else from SQLite is a damaged log.
TRANSIENT_SQLITE = frozenset({13, 8, 10, 14})  # SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN
TRANSIENT_SQLITE_TEXT = ("database or disk is full", "readonly database", "disk i/o error", "unable to open")


def is_transient(error: BaseException) -> bool:
    """A file-system fault that should clear by itself or by the user's hand (see the module's list), met by a file
    or by the log's SQLite file."""
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, sqlite3.OperationalError):
        code = getattr(error, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in TRANSIENT_SQLITE
        return any(text in str(error).lower() for text in TRANSIENT_SQLITE_TEXT)
    return isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS


def is_log_fault(error: BaseException) -> bool:
    """SQLite itself failed (a damaged or unreadable log), and not for a transient reason: not a fault of one input."""
    return isinstance(error, sqlite3.DatabaseError) and not is_transient(error)


def describe(error: BaseException) -> str:
    """One line for a log line, an event and `status`: the type and the message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
