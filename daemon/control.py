"""The running daemon's control socket: the shell's corrections handed to its worker.

`facesetd label`, `move`, `promote`, `restore`, `eras split` and `rebuild` record events, and the daemon is the one
writer of a data folder. While it runs (always, under systemd) these verbs hand their change to it through
`<state>/facesetd.sock`, a unix socket only the data folder's owner can use: the file is made 0600 (a socket
can be connected to only with write permission on it) and every connection's peer must be the daemon's own user
or root (SO_PEERCRED). The daemon runs the change on its worker, exactly as a click on its review page does
(daemon/review/actions.py, DaemonRunner), and answers with the id of the event it recorded; the verb prints the
same line as when it makes the change itself.

The protocol is one JSON object a line, one request per connection:

| request | answer |
|---|---|
| `{"action": NAME, "form": {...}}` (an action of daemon/review/actions.py) | `{"position": N}` or `{"error": LINE}` |
| `{"action": "where"}` | `{"review": URL or null, "pid": PID}` |

An error the daemon answers is the one line the verb would have printed itself (a FacesetdError's message); the
verb prints it and exits 1, as always.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from state.errors import FacesetdError

log = structlog.get_logger("facesetd.control")

SOCKET_NAME = "facesetd.sock"  # beside the event log and the lock, under <state>/
MAX_REQUEST = 1 << 20  # the longest request line read (a promotion of many faces stays far below)
CONNECT_WAIT_S = 5.0  # how long a verb waits for a daemon that holds the lock but has no socket yet (starting)
ANSWER_WAIT_S = 180.0  # how long a verb waits for the answer (a restore settles the checks it leads to)
MAX_SUN_PATH = 100  # sockaddr_un's sun_path holds 108 bytes; longer paths are reached through /proc/self/fd


class ControlError(FacesetdError):
    """The daemon could not be asked (no socket, no answer): one line naming what to do."""


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """An address for `path` that fits sun_path: the path itself, or /proc/self/fd/N/NAME through its folder."""
    if len(os.fsencode(str(path))) <= MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Listens on `<state>/facesetd.sock` in a thread; each connection is answered by `handle` in its own thread
    (an action waits for the worker, so a slow one never holds up a `where`)."""

    def __init__(self, state_dir: Path, handle: Handler) -> None:
        self.path = socket_path(state_dir)
        self.handle = handle
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        """Bind (replacing a socket file left by a daemon that died: we hold the data folder's lock, so it is no
        one's) and serve in a thread. FacesetdError when the path is taken by something else."""
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # born 0600: no moment in which another user could connect
        try:
            with _short(self.path) as address:
                sock.bind(address)
        except OSError as e:
            sock.close()
            raise FacesetdError(f"control socket: cannot listen on {self.path}: {e.strerror}") from e
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(0.5)  # the accept loop looks at `stopping` this often
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self.thread.start()

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FacesetdError(f"control socket: {self.path} exists and is not a socket; move it away")
        os.unlink(self.path)

    def _serve(self) -> None:
        assert self.sock is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._answer, args=(conn,), name="control-request", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(None)
            if not _same_user(conn):
                log.warning("control socket: a connection from another user refused")
                return
            try:
                request = _read_line(conn)
                reply = self.handle(request) if isinstance(request, dict) else {"error": "a request is a JSON object"}
            except FacesetdError as e:
                reply = {"error": str(e)}
            except Exception as e:  # a bug answers one line and is logged with its traceback; the daemon goes on
                log.exception("control request failed", error=str(e))
                reply = {"error": f"the daemon failed on this request (a bug; its log has the traceback): {e}"}
            with contextlib.suppress(OSError):  # the verb gave up (Ctrl-C): the change stands, recorded
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def stop(self) -> None:
        self.stopping.set()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self.thread is not None:
            self.thread.join(2)


def _same_user(conn: socket.socket) -> bool:
    """The peer runs as our user (or root): SO_PEERCRED's uid."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (os.geteuid(), 0)


def _read_line(conn: socket.socket) -> Any:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise FacesetdError(f"request longer than {MAX_REQUEST} bytes")
    try:
        return json.loads(data)
    except ValueError as e:
        raise FacesetdError(f"not a JSON request: {e}") from None


def ask(state_dir: Path, request: dict[str, Any], *, pid: int | None = None,
        connect_wait_s: float = CONNECT_WAIT_S, answer_wait_s: float = ANSWER_WAIT_S) -> dict[str, Any]:
    """Send one request to the daemon of this data folder and return its answer (a dict). ControlError when it
    cannot be reached; an answer {"error": ...} is raised as FacesetdError with the daemon's line."""
    path = socket_path(state_dir)
    who = f"facesetd run (pid {pid})" if pid is not None else "the running facesetd"
    deadline = time.monotonic() + connect_wait_s
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with _short(path) as address:
                sock.connect(address)
            break
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            if time.monotonic() >= deadline:
                raise ControlError(f"{who} holds this data folder but does not answer on {path} ({e.strerror});"
                                   " a daemon older than this facesetd has no control socket: restart it, or stop"
                                   " it first") from None
            time.sleep(0.1)
        except PermissionError:
            sock.close()
            raise ControlError(f"{who} holds this data folder and its control socket {path} is not yours: run this"
                               " as the user the daemon runs as") from None
    with sock:
        sock.settimeout(answer_wait_s)
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_line(sock)
        except TimeoutError:
            raise ControlError(f"{who} did not answer within {answer_wait_s:g} s; the change may still be"
                               " recorded: see `facesetd events`") from None
        except FacesetdError:
            raise ControlError(f"{who} closed the control socket without an answer (it may be stopping);"
                               " see `facesetd events` for whether the change was recorded") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{who} answered something that is not a JSON object")
    if "error" in reply:
        raise FacesetdError(str(reply["error"]))
    return reply
