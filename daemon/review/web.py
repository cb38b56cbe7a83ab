"""The review pages as a Starlette app: read-only pages, thumbnails, server-sent events, and POST actions.

Guards: when a token is configured (required for anything but loopback), every request needs it (the
`Authorization: Bearer` header, or `?token=` once, which sets an HttpOnly SameSite=Strict cookie and redirects
to the same page without it); a request for a loopback listener must name a loopback Host (no DNS rebinding);
a POST must come from the page itself: same Origin (or Referer) as Host, not a cross-site fetch, and carry the
per-process form token.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from handlers.thresholds import IdentityThresholds
from state.correction_queries import StateQueries
from state.errors import FacesetdError

from . import pages
from .actions import Runner, what
from .links import Links
from .render import STATIC, render
from .thumbs import SHA256, Thumbs

log = structlog.get_logger("facesetd.review")

COOKIE = "facesetd_review"
STREAM_POLL_S = 1.0  # how often the event stream looks at the log's head
KEEPALIVE_S = 15.0  # a comment line on a quiet stream, so proxies and browsers keep it open
MAX_FORM_BYTES = 1 << 20  # the largest form a click posts (a promotion of thousands of faces stays far below)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self';"
                               " frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
THUMB_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable"}  # named by the bytes' sha256
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class Site:
    """What the pages read and do: the state (read-only), the folders, the tunables, and who runs actions."""

    state: StateQueries
    corpus: Path
    inbox: Path
    top_n: int
    identity: IdentityThresholds
    thumbs: Thumbs
    runner: Runner | None  # None: pages only
    token: str = ""  # "" = none needed (loopback only)
    loopback: bool = True
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    stopping: threading.Event = field(default_factory=threading.Event)
    links: Links = field(default_factory=Links)
    # The work the daemon holds back for a fault (daemon/runner.py pauses), when the daemon serves the pages.
    paused: Callable[[], list[dict[str, Any]]] = field(default=lambda: [])


def host_name(host_header: str) -> str:
    """`127.0.0.1:8476` -> `127.0.0.1`, `[::1]:8476` -> `[::1]`."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _has_token(site: Site, request: Request) -> bool:
    offered = request.cookies.get(COOKIE, "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        offered = auth[7:].strip()
    return bool(offered) and hmac.compare_digest(offered.encode(), site.token.encode())


def _refused(status: int, why: str) -> Response:
    return PlainTextResponse(f"refused: {why}\n", status_code=status, headers={"Cache-Control": "no-store"})


def guard(site: Site, request: Request) -> Response | None:
    """None when the request may go on; else the response that refuses it."""
    host = request.headers.get("host", "")
    if site.loopback and host_name(host) not in LOOPBACK_HOSTS:
        return _refused(403, f"host {host!r} is not this machine (the review pages listen on loopback only)")
    if site.token and not _has_token(site, request):
        if request.method == "GET" and request.query_params.get("token") is not None:
            return _token_login(site, request)
        return _refused(401, "the review pages need their token ([review] token_env): open them with ?token=...")
    return None


def _token_login(site: Site, request: Request) -> Response:
    """`?token=` once: set the cookie and redirect to the same page without the token in its address."""
    if not hmac.compare_digest(request.query_params.get("token", "").encode(), site.token.encode()):
        return _refused(401, "wrong token")
    query = "&".join(f"{k}={quote(v)}" for k, v in request.query_params.multi_items() if k != "token")
    response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
    response.set_cookie(COOKIE, site.token, httponly=True, samesite="strict")
    return response


def same_origin(request: Request) -> str | None:
    """None when a POST comes from our own page; else why it is refused (a cross-site request forgery guard)."""
    host = request.headers.get("host", "")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "a cross-site request"
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return "no Origin or Referer header"
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(referer))
    if origin == "null" or urlsplit(origin).netloc != host:
        return f"origin {origin!r} is not this page's ({host!r})"
    return None


def _back_to(where: str, **message: str) -> str:
    """A local path to go back to (never another site), with the result to show."""
    if not where.startswith("/") or where.startswith("//"):
        where = "/facesets"
    where = where.split("?", 1)[0] if "msg=" in where or "error=" in where else where
    sep = "&" if "?" in where else "?"
    return where + "".join(f"{sep if i == 0 else '&'}{k}={quote(v)}" for i, (k, v) in enumerate(message.items()))


class Endpoints:
    """The routes' functions over one Site."""

    def __init__(self, site: Site) -> None:
        self.site = site


    def page(self, template: str, context: dict[str, Any] | None, request: Request, here: str) -> Response:
        if context is None:
            return HTMLResponse(render("missing.html", {"title": "Not found"}, self.site.links, here=here,
                                       head=self.site.state.log.head()), status_code=404, headers=PAGE_HEADERS)
        html = render(template, context, self.site.links, here=here, actions=self.site.runner is not None, csrf=self.site.csrf,
                      msg=request.query_params.get("msg", ""), error=request.query_params.get("error", ""),
                      head=self.site.state.log.head())
        return HTMLResponse(html, headers=PAGE_HEADERS)

    def facesets(self, request: Request) -> Response:
        context = pages.facesets(self.site.state, self.site.top_n)
        context["paused"] = self.site.paused()
        return self.page("facesets.html", context, request, "facesets")

    def faceset(self, request: Request) -> Response:
        name = request.path_params["name"]
        return self.page("faceset.html", pages.faceset(self.site.state, self.site.corpus, self.site.top_n, name), request, "facesets")

    def pool(self, request: Request) -> Response:
        return self.page("pool.html", pages.pool(self.site.state, self.site.identity), request, "pool")

    def decisions(self, request: Request) -> Response:
        return self.page("decisions.html", pages.decisions(self.site.state, self.site.corpus,
                                                           _cursor(request.query_params.get("before", ""))),
                         request, "decisions")

    def candidates(self, request: Request) -> Response:
        return self.page("candidates.html", pages.candidates(self.site.state, self.site.top_n), request, "candidates")

    def thumb(self, request: Request) -> Response:
        sha = request.path_params["sha"]
        if not SHA256.match(sha):
            return _refused(404, "no such thumbnail")
        cached = self.site.thumbs.cached(sha)
        if not cached.is_file():
            rel = self.site.state.file_with_sha256(sha)
            source = self.site.corpus / rel if rel else None
            if source is None or not source.is_file():
                return _refused(404, "no face with these bytes")
            cached = self.site.thumbs.path(sha, source)
        return FileResponse(cached, media_type="image/webp", headers=THUMB_HEADERS)

    def photo(self, request: Request) -> Response:
        sha = request.path_params["sha"]
        rel = self.site.state.face_source(sha).get("photo", "") if SHA256.match(sha) else ""
        path = (self.site.inbox / rel).resolve() if rel else None
        if path is None or not path.is_relative_to(self.site.inbox.resolve()) or not path.is_file():
            return _refused(404, "the source photo is not in the inbox's _processed/ folder")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    def head(self, request: Request) -> Response:
        return JSONResponse({"head": self.site.state.log.head()}, headers={"Cache-Control": "no-store"})

    async def stream(self, request: Request) -> Response:
        return StreamingResponse(self._heads(request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _heads(self, request: Request) -> AsyncIterator[str]:
        """`data: <log head>` now and whenever the log grows; the page refreshes itself on a change."""
        last, quiet = -1, 0.0
        while not self.site.stopping.is_set() and not await request.is_disconnected():
            now = await run_in_threadpool(self.site.state.log.head)
            if now != last:
                last, quiet = now, 0.0
                yield f"data: {now}\n\n"
            elif quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": still here\n\n"
            await asyncio.sleep(STREAM_POLL_S)
            quiet += STREAM_POLL_S

    async def act(self, request: Request) -> Response:
        if self.site.runner is None:
            return _refused(405, "these pages are read-only")
        refused = same_origin(request)
        if refused is not None:  # refused before a byte of the body is read
            log.warning("review action refused", action=request.path_params["name"], why=refused)
            return _refused(403, refused)
        raw = await _bounded_body(request)
        if raw is None:
            return _refused(413, f"a form of more than {MAX_FORM_BYTES} bytes")
        body = parse_qs(raw.decode("utf-8", "replace"))
        form = {k: "\n".join(v) for k, v in body.items()}  # a field sent twice (checkboxes): one value a line
        if refused is None and not hmac.compare_digest(form.get("csrf", "").encode(), self.site.csrf.encode()):
            refused = "the form's token is missing or stale (reload the page)"
        if refused is not None:
            log.warning("review action refused", action=request.path_params["name"], why=refused)
            return _refused(403, refused)
        name = request.path_params["name"]
        back = form.get("next", "/facesets")
        try:
            position = await run_in_threadpool(self.site.runner, name, form)
        except (FacesetdError, TimeoutError) as e:
            log.warning("review action failed", action=name, error=str(e))
            return RedirectResponse(_back_to(back, error=str(e)), status_code=303)
        done = f"{what(name, form)} recorded as event {position}"
        log.info("review action", action=name, asked=what(name, form), recorded=position)
        return RedirectResponse(_back_to(back, msg=done), status_code=303)

    def index(self, request: Request) -> Response:
        return RedirectResponse("/facesets", status_code=303)


def build_app(site: Site) -> Starlette:
    """The ASGI app for `site`."""
    e = Endpoints(site)
    routes = [
        Route("/", e.index), Route("/facesets", e.facesets), Route("/faceset/{name}", e.faceset), Route("/pool", e.pool),
        Route("/decisions", e.decisions), Route("/candidates", e.candidates), Route("/thumb/{sha}.webp", e.thumb), Route("/photo/{sha}", e.photo),
        Route("/head", e.head), Route("/stream", e.stream), Route("/action/{name}", e.act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def guarded(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        refused = guard(site, request)
        return refused if refused is not None else await call_next(request)

    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=guarded)])


async def _bounded_body(request: Request) -> bytes | None:
    """The request's body, or None once it passes MAX_FORM_BYTES (by its Content-Length, before reading, or while
    reading a body sent without one): a huge POST never fills the daemon's memory."""
    length = request.headers.get("content-length", "")
    if length and (not (length.isascii() and length.isdigit()) or int(length) > MAX_FORM_BYTES):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return bytes(body)


def _cursor(text: str) -> int | None:
    """A `before=` page cursor: a log position (ASCII digits, within SQLite's 64-bit integers), else None (the
    newest page): an odd value never becomes a 500."""
    if not (text.isascii() and text.isdigit()):
        return None
    return min(int(text), 2**63 - 1)
