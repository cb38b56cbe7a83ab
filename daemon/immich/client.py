"""A small Immich client on requests: x-api-key auth, one deadline per request, retries with backoff on
5xx, deadlines and connection errors (never on 4xx), answers read into checked values (shapes.py), and
typed errors (errors.py) whose messages never carry the key.

Every request runs under a RequestWatch (deadline.py): its connect and all its reads, a streamed original's
included, end by one deadline (`timeout_s`), and all of them end at once when the client's Cancel is set
(the daemon is stopping); a backoff between retries ends then too.

Paths and fields are those of Immich v3.1.0's spec (../shared/immich/immich-openapi-specs.json);
see docs/immich.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import structlog

from daemon.logs import redact_text

from .deadline import CANCELLED, DEADLINE, Cancel, WatchedAdapter, watching
from .errors import (
    ImmichAuthError,
    ImmichCancelled,
    ImmichError,
    ImmichMalformed,
    ImmichNotFound,
    ImmichPermissionError,
    ImmichRequestError,
    ImmichTooLarge,
    ImmichUnavailable,
)
from .shapes import UUID_RE, Asset, Face, SearchPage, read_asset, read_faces, read_search_page

__all__ = [
    "UUID_RE", "Download", "ImmichAuthError", "ImmichCancelled", "ImmichClient", "ImmichError", "ImmichMalformed",
    "ImmichNotFound", "ImmichPermissionError", "ImmichRequestError", "ImmichTooLarge", "ImmichUnavailable",
]

log = structlog.get_logger("facesetd.immich")

# What the poller needs from a key (`all` covers everything). `person.read` is in Immich's own
# checklist but the poller does not read people, so it is not required.
REQUIRED_PERMISSIONS = ("asset.read", "face.read", "asset.download")
CHUNK = 256 * 1024
# The longest a TCP connect may take (within the request's deadline). A connect cannot be cut off from another
# thread like a read, so this bounds how long a stop waits for one; a server that answers connects in milliseconds.
CONNECT_S = 5.0


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    size: int


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
        msg = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        msg = None
    text = str(msg) if msg else (resp.reason or "")
    return redact_text(text)[:200]


class ImmichClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        pool_size: int = 8,
        cancel: Cancel | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api = self.url + "/api"
        self.timeout_s = timeout_s  # one request's deadline: its connect and all its reads together
        self.retries = retries
        self.backoff_s = backoff_s
        self.cancel = cancel or Cancel()  # shared by the scheduler's clients: set when the daemon stops
        self.session = requests.Session()
        adapter = WatchedAdapter(pool_connections=2, pool_maxsize=max(pool_size, 2), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # The key lives only in the session's headers; it is never formatted into a message.
        self.session.headers.update({"x-api-key": api_key, "Accept": "application/json"})

    def __repr__(self) -> str:  # no key in reprs either
        return f"ImmichClient({self.url!r})"

    def close(self) -> None:
        self.session.close()

    # Transport ------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, handle: Callable[[requests.Response], Any], **kw: Any) -> Any:
        """Send with retries; `handle` reads a 2xx response (inside the retry and the deadline, so a broken or
        slow stream retries). Raises ImmichCancelled as soon as the client's Cancel is set."""
        what = f"{method} {path.split('?')[0]}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt and self.cancel.wait(min(self.backoff_s * 2 ** (attempt - 1), 30.0)):
                break
            if self.cancel.is_set():
                break
            timeout = (min(CONNECT_S, self.timeout_s), self.timeout_s)
            with watching(self.cancel, self.timeout_s) as watch:
                try:
                    result = self._once(method, path, handle, what, timeout, **kw)
                except ImmichError:
                    # A body cut off by the watch can look like a short or malformed answer: that is the deadline.
                    if watch.finish() is None:
                        raise
                except requests.RequestException as e:  # a 5xx (HTTPError, from _once), a timeout, a dropped stream
                    last = str(e) if type(e) is requests.HTTPError else type(e).__name__
                else:
                    if watch.finish() is None:
                        return result
                fired = watch.fired
            if fired == CANCELLED:
                break
            if fired == DEADLINE:
                last = f"no complete answer within {self.timeout_s:g} s"
            log.debug("immich_retry", server=self.url, call=what, attempt=attempt + 1, reason=last)
        if self.cancel.is_set():
            raise ImmichCancelled(f"Immich at {self.url}: {what} cut off: facesetd is stopping")
        raise ImmichUnavailable(f"Immich at {self.url} is unavailable: {what} failed {self.retries + 1} times ({last})")

    def _once(self, method: str, path: str, handle: Callable[[requests.Response], Any], what: str,
              timeout: tuple[float, float], **kw: Any) -> Any:
        """One attempt: the answer read by `handle`, an ImmichError for a 4xx, or a RequestException (5xx too)."""
        with self.session.request(method, self.api + path, timeout=timeout, **kw) as resp:
            if resp.status_code >= 500:
                raise requests.HTTPError(f"HTTP {resp.status_code} {_message(resp)}")
            if resp.status_code == 401:
                raise ImmichAuthError(
                    f"Immich at {self.url} refused the API key ({_message(resp)}); check that the key "
                    "exists and is not revoked"
                )
            if resp.status_code == 403:
                raise ImmichPermissionError(
                    f"Immich at {self.url} denied {what}: {_message(resp)}; give the key "
                    f"{', '.join(REQUIRED_PERMISSIONS)} (or all)"
                )
            if resp.status_code == 404 or (resp.status_code == 400 and "not found" in _message(resp).lower()):
                raise ImmichNotFound(f"Immich at {self.url}: {what}: {_message(resp)}")
            if resp.status_code >= 400:
                raise ImmichRequestError(
                    f"Immich at {self.url} rejected {what}: HTTP {resp.status_code} {_message(resp)}"
                )
            return handle(resp)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        def read(resp: requests.Response) -> Any:
            try:
                return resp.json()
            except ValueError as e:
                raise ImmichMalformed(f"Immich at {self.url}: {method} {path.split('?')[0]}: the answer is not JSON") from e

        return self._call(method, path, read, **kw)

    def _object(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        body = self._json(method, path, **kw)
        if not isinstance(body, dict):
            raise ImmichMalformed(f"Immich at {self.url}: {method} {path}: the answer is {type(body).__name__}, "
                                  "not an object")
        return body

    # Endpoints ------------------------------------------------------------------------------------
    def ping(self) -> bool:
        """GET /server/ping (public): True when the server answers "pong"."""
        return self._object("GET", "/server/ping").get("res") == "pong"

    def version(self) -> str:
        v = self._object("GET", "/server/version")
        parts = [v.get(k) for k in ("major", "minor", "patch")]
        if not all(isinstance(n, int) for n in parts):
            raise ImmichMalformed(f"Immich at {self.url}: GET /server/version: no major, minor and patch numbers")
        return ".".join(str(n) for n in parts)

    def my_api_key(self) -> dict[str, Any]:
        """GET /api-keys/me: the key's own name and permissions (needs no permission)."""
        return self._object("GET", "/api-keys/me")

    def missing_permissions(self) -> list[str]:
        perms = self.my_api_key().get("permissions")
        perms = set(perms) if isinstance(perms, list) and all(isinstance(p, str) for p in perms) else set()
        return [] if "all" in perms else [p for p in REQUIRED_PERMISSIONS if p not in perms]

    def search_metadata(self, body: dict[str, Any]) -> SearchPage:
        """POST /search/metadata: one page (its items unread: each is read on its own, see shapes.read_asset)."""
        return read_search_page(self._json("POST", "/search/metadata", json=body))

    def asset(self, asset_id: str) -> Asset:
        return read_asset(self._json("GET", f"/assets/{_checked_id(asset_id)}"))

    def faces(self, asset_id: str) -> list[Face]:
        """GET /faces?id=<asset id> (the spec calls it a face id; the server reads an asset id)."""
        return read_faces(self._json("GET", "/faces", params={"id": _checked_id(asset_id)}), asset_id)

    def download_original(self, asset_id: str, dest: Path, max_bytes: int | None = None) -> Download:
        """Stream GET /assets/{id}/original into `dest` (overwritten on retry), hashing as it goes.

        Over `max_bytes`: refused by its Content-Length before a byte of the body is read, or abandoned as soon
        as more than that has arrived (ImmichTooLarge); the body is never held in memory."""

        def stream(resp: requests.Response) -> Download:
            expected = _content_length(resp)
            if max_bytes is not None and expected is not None and expected > max_bytes:
                raise ImmichTooLarge(f"{expected} bytes by its Content-Length, over the limit of {max_bytes}", expected)
            h = hashlib.sha256()
            size = 0
            with open(dest, "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise ImmichTooLarge(f"over the limit of {max_bytes} bytes while it streamed (no length "
                                             "given); abandoned there", size)
                    h.update(chunk)
                    f.write(chunk)
            if expected is not None and expected != size:
                raise requests.exceptions.ChunkedEncodingError(f"short body: {size} of {expected} bytes")
            return Download(dest, h.hexdigest(), size)

        return self._call(
            "GET",
            f"/assets/{_checked_id(asset_id)}/original",
            stream,
            stream=True,
            headers={"Accept": "application/octet-stream"},
        )


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ImmichMalformed(f"a Content-Length of {value[:40]!r}") from None


def _checked_id(asset_id: str) -> str:
    if not isinstance(asset_id, str) or not UUID_RE.match(asset_id):
        raise ImmichRequestError(f"not an Immich asset id: {str(asset_id)[:60]!r}")
    return asset_id
