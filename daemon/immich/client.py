"""A small Immich client on requests: x-api-key auth, timeouts, retries with backoff on 5xx and
connection errors (never on 4xx), and typed errors whose messages never carry the key.

Paths and fields are those of Immich v3.1.0's spec (../shared/immich/immich-openapi-specs.json);
see docs/immich.md.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import structlog
from requests.adapters import HTTPAdapter

from daemon.logs import redact_text
from state.errors import FacesetdError

log = structlog.get_logger("facesetd.immich")

# What the poller needs from a key (`all` covers everything). `person.read` is in Immich's own
# checklist but the poller does not read people, so it is not required.
REQUIRED_PERMISSIONS = ("asset.read", "face.read", "asset.download")
# Immich ids are v4 UUIDs (the spec's pattern); anything else from the server is refused before it
# reaches a URL path or a file name.
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")
CHUNK = 256 * 1024


class ImmichError(FacesetdError):
    """Something went wrong talking to Immich; the message names the server, never the key."""


class ImmichAuthError(ImmichError):
    """401: the key is missing, unknown or revoked."""


class ImmichPermissionError(ImmichError):
    """403: the key lacks a permission the call needs."""


class ImmichUnavailable(ImmichError):
    """The server did not answer (connection error, timeout, 5xx) after the retries."""


class ImmichNotFound(ImmichError):
    """The asset is gone (404, or Immich's 400 "Not found or no asset.read access")."""


class ImmichRequestError(ImmichError):
    """Any other 4xx: a bug on our side or an API change; not retried."""


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.api = self.url + "/api"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 2), max_retries=0)
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
        """Send with retries; `handle` reads a 2xx response (inside the retry, so a broken stream retries)."""
        what = f"{method} {path.split('?')[0]}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
            try:
                with self.session.request(method, self.api + path, timeout=self.timeout_s, **kw) as resp:
                    if resp.status_code >= 500:
                        last = f"HTTP {resp.status_code} {_message(resp)}"
                        continue
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
                    if resp.status_code == 404 or (
                        resp.status_code == 400 and "not found" in _message(resp).lower()
                    ):
                        raise ImmichNotFound(f"Immich at {self.url}: {what}: {_message(resp)}")
                    if resp.status_code >= 400:
                        raise ImmichRequestError(
                            f"Immich at {self.url} rejected {what}: HTTP {resp.status_code} {_message(resp)}"
                        )
                    return handle(resp)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                last = type(e).__name__
            log.debug("immich_retry", server=self.url, call=what, attempt=attempt + 1, reason=last)
        raise ImmichUnavailable(f"Immich at {self.url} is unavailable: {what} failed {self.retries + 1} times ({last})")

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        def read(resp: requests.Response) -> Any:
            try:
                return resp.json()
            except ValueError as e:
                raise ImmichRequestError(f"Immich at {self.url}: {method} {path}: the answer is not JSON") from e

        return self._call(method, path, read, **kw)

    # Endpoints ------------------------------------------------------------------------------------
    def ping(self) -> bool:
        """GET /server/ping (public): True when the server answers "pong"."""
        return self._json("GET", "/server/ping").get("res") == "pong"

    def version(self) -> str:
        v = self._json("GET", "/server/version")
        return f"{v['major']}.{v['minor']}.{v['patch']}"

    def my_api_key(self) -> dict[str, Any]:
        """GET /api-keys/me: the key's own name and permissions (needs no permission)."""
        return self._json("GET", "/api-keys/me")

    def missing_permissions(self) -> list[str]:
        perms = set(self.my_api_key().get("permissions", []))
        return [] if "all" in perms else [p for p in REQUIRED_PERMISSIONS if p not in perms]

    def search_metadata(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /search/metadata: one page; returns the `assets` object (items, nextPage)."""
        return self._json("POST", "/search/metadata", json=body)["assets"]

    def asset(self, asset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/assets/{_checked_id(asset_id)}")

    def faces(self, asset_id: str) -> list[dict[str, Any]]:
        """GET /faces?id=<asset id> (the spec calls it a face id; the server reads an asset id)."""
        return self._json("GET", "/faces", params={"id": _checked_id(asset_id)})

    def download_original(self, asset_id: str, dest: Path) -> Download:
        """Stream GET /assets/{id}/original into `dest` (overwritten on retry), hashing as it goes."""

        def stream(resp: requests.Response) -> Download:
            h = hashlib.sha256()
            size = 0
            with open(dest, "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            expected = resp.headers.get("Content-Length")
            if expected is not None and int(expected) != size:
                raise requests.exceptions.ChunkedEncodingError(f"short body: {size} of {expected} bytes")
            return Download(dest, h.hexdigest(), size)

        return self._call(
            "GET",
            f"/assets/{_checked_id(asset_id)}/original",
            stream,
            stream=True,
            headers={"Accept": "application/octet-stream"},
        )


def _checked_id(asset_id: str) -> str:
    if not isinstance(asset_id, str) or not UUID_RE.match(asset_id):
        raise ImmichRequestError(f"not an Immich asset id: {str(asset_id)[:60]!r}")
    return asset_id
