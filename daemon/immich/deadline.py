"""One deadline per HTTP request, and the cancellation of every request in flight.

`requests` times out per socket operation: a server that answers one byte every 20 s, or its headers
after 35 s with a 30 s timeout retried, keeps a request (and a poll, and a daemon waiting for that
poll to stop) alive for minutes or for ever. Here each request gets one deadline for its connect and
all its reads, streamed bodies included: when it passes, or when the poll is cancelled (SIGTERM), the
request's socket is shut down from another thread, so the read blocked on it returns at once and the
client sees a failed request.

How the socket is found: the session's connection pools make WatchedHTTPConnection objects, which
attach their socket to the calling thread's RequestWatch when they connect or send a request (a pooled
connection is reused by later requests, so attaching on connect alone would miss those).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

DEADLINE = "deadline"  # why a watch fired: its request ran past its deadline
CANCELLED = "cancelled"  # ... or the poll it belongs to was cancelled

_current = threading.local()  # .watch: the RequestWatch of the request this thread is making, if any


def _shut(sock: Any) -> None:
    """Shut a socket down for reading and writing: a recv blocked on it in another thread returns at once.

    socket.socket.shutdown, not the SSLSocket's own (which also drops its SSL object under the reading thread).
    A socket that http.client has closed while its response still reads from it is still open underneath."""
    with contextlib.suppress(OSError):  # already closed for good: nothing is blocked on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class RequestWatch:
    """One request's deadline and cancellation: `fired` says why the request was cut off (None: it was not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Any = None
        self._done = False
        self.fired: str | None = None

    def attach(self, conn: Any) -> None:
        """The connection this request runs on. Its socket is kept here: when the server says `Connection: close`
        the connection lets go of it, and the response reads on from it."""
        sock = getattr(conn, "sock", None)
        if sock is None:  # not connected yet: attached again once it is
            return
        with self._lock:
            self._sock = sock
            fired = self.fired is not None and not self._done
        if fired:
            _shut(sock)

    def fire(self, why: str) -> None:
        """Cut the request off (no effect once it has finished: its pooled connection then serves another)."""
        with self._lock:
            if self._done or self.fired is not None:
                return
            self.fired = why
            sock = self._sock
        if sock is not None:
            _shut(sock)

    def finish(self) -> str | None:
        """The request is over: from now on firing does nothing. Returns why it was cut off, if it was."""
        with self._lock:
            self._done = True
            return self.fired


class Cancel:
    """Set once, when the daemon stops: every request in flight is cut off, and no new one starts."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._watches: set[RequestWatch] = set()

    def set(self) -> None:
        self._event.set()
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            w.fire(CANCELLED)

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True (at once) when cancelled."""
        return self._event.wait(seconds)

    def _add(self, w: RequestWatch) -> None:
        with self._lock:
            self._watches.add(w)
        if self._event.is_set():  # set between the caller's check and now
            w.fire(CANCELLED)

    def _discard(self, w: RequestWatch) -> None:
        with self._lock:
            self._watches.discard(w)


@contextmanager
def watching(cancel: Cancel, seconds: float) -> Iterator[RequestWatch]:
    """Run one request of this thread under a watch that fires after `seconds` or when `cancel` is set."""
    w = RequestWatch()
    timer = threading.Timer(seconds, w.fire, args=(DEADLINE,))
    timer.daemon = True
    cancel._add(w)
    _current.watch = w
    timer.start()
    try:
        yield w
    finally:
        timer.cancel()
        _current.watch = None
        cancel._discard(w)
        w.finish()


def _attach_current(conn: Any) -> None:
    w = getattr(_current, "watch", None)
    if w is not None:
        w.attach(conn)


class _Watched:
    """A connection that puts itself under the current request's watch when it connects or sends (a mixin)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach_current(self)

    def request(self, *args: Any, **kw: Any) -> None:
        _attach_current(self)
        super().request(*args, **kw)  # type: ignore[misc]


class WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections attach to the calling thread's RequestWatch."""

    def init_poolmanager(self, *args: Any, **kw: Any) -> None:
        super().init_poolmanager(*args, **kw)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
