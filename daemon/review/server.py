"""Serve the review pages with uvicorn: in a thread beside the daemon's worker, or in the foreground.

The listening socket is bound here first, so a port in use or a bad address is one clear error (uvicorn itself
would exit the process), and port 0 picks a free port (the URL logged names the one bound).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import structlog

from state.errors import ConfigError, FacesetdError

log = structlog.get_logger("facesetd.review")

STOP_WAIT_S = 3  # how long a stop waits for open connections (an event stream) to end


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def parse_listen(value: str) -> Listen:
    """`HOST:PORT` ([::1]:8476 for IPv6) -> Listen; ConfigError naming review.listen otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"review.listen: expected HOST:PORT, got {value!r}")
    return Listen(host, int(port))


def review_token(review: Any, listen: Listen, environ: dict[str, str] | None = None) -> str:
    """The token the pages need ("" = none): required, and read from the variable token_env names, whenever
    the pages listen on anything but loopback."""
    env = os.environ if environ is None else environ
    token = env.get(review.token_env, "") if review.token_env else ""
    if not listen.loopback and not token:
        where = (f"the variable {review.token_env} is empty or unset" if review.token_env
                 else "review.token_env names no variable")
        raise ConfigError(f"review.listen {listen.host}:{listen.port} is not loopback and {where}: the review pages"
                          " would be open to the network; set a token (review.token_env) or listen on 127.0.0.1")
    if token and len(token) < 16:
        raise ConfigError(f"review.token_env: the token in {review.token_env} is too short (at least 16 characters)")
    return token


def bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as e:
        sock.close()
        raise FacesetdError(f"review pages: cannot listen on {listen.host}:{listen.port}: {e.strerror}") from e
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class ReviewServer:
    """uvicorn serving `app` on a socket bound beforehand; `serve()` in the foreground, `start()` in a thread."""

    def __init__(self, app: Any, sock: socket.socket, listen: Listen, stopping: threading.Event) -> None:
        import uvicorn

        self.sock = sock
        self.listen = listen
        self.stopping = stopping
        self.port = int(sock.getsockname()[1])
        # log_config None: keep facesetd's logging; no access log (a URL may carry ?token=)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=STOP_WAIT_S, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.listen.url(self.port)

    def serve(self) -> None:
        """In the foreground until interrupted (uvicorn handles SIGINT and SIGTERM in the main thread)."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.stopping.set()
            self.sock.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.serve, name="review-pages", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()  # event streams end at their next look
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(STOP_WAIT_S + 2)


def open_site(config: Any, runner: Any, environ: dict[str, str] | None = None) -> tuple[Any, Listen]:
    """The pages' Site for a data folder (read-only state, thumbnails under <state>/thumbs) and where they
    listen; ConfigError when the listen address or the token is wrong."""
    from state.readonly import ReadOnlyState

    from .thumbs import Thumbs
    from .web import Site

    listen = parse_listen(config.review.listen)
    token = review_token(config.review, listen, environ)
    site = Site(state=ReadOnlyState(config.log_path), corpus=config.corpus_dir, inbox=config.inbox_dir,
                top_n=config.projection.top_n, identity=config.identity,
                thumbs=Thumbs(config.state_dir / "thumbs", config.review.thumb_px), runner=runner, token=token,
                loopback=listen.loopback)
    from daemon.logs import register_secret

    register_secret(token)
    register_secret(site.csrf)  # the form token too: a traceback's locals must not show it
    return site, listen


def server_for(site: Any, listen: Listen) -> ReviewServer:
    """Bind the socket and make the server (FacesetdError when the address cannot be bound)."""
    from .web import build_app

    return ReviewServer(build_app(site), bind(listen), listen, site.stopping)
