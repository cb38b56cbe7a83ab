"""The daemon's side of the loopback agent: FaceEngine and OcclusionScorer over HTTP.

Timeouts on every request; retries with exponential backoff on connection errors, timeouts and 502/503/504;
AgentUnavailable with the URL when the agent stays silent, AgentAuthError on 401 (never retried).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import requests

from .errors import AgentAuthError, AgentProtocolError, AgentUnavailable, ModelError
from .interface import DetectedFace
from .wire import b64, face_from_json

RETRY_STATUS = {502, 503, 504}
# First backoff pause in seconds; doubles each retry (0.5, 1, 2, ...).
BACKOFF_S = 0.5


class HttpAgent:
    """Both model interfaces, answered by `facesetd gpu-agent serve` at `url`."""

    def __init__(self, url: str, token: str, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = BACKOFF_S) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._health: dict[str, Any] | None = None

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self._session.request(method, self.url + path, json=body, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = type(e).__name__
                continue
            if r.status_code in RETRY_STATUS:
                last = f"HTTP {r.status_code}"
                continue
            if r.status_code == 401:
                raise AgentAuthError(
                    f"gpu agent at {self.url} refused the token (401): set the same FACESETD_GPU_AGENT_TOKEN "
                    "for the daemon and the agent"
                )
            try:
                data = r.json()
            except ValueError as e:
                raise AgentProtocolError(f"gpu agent at {self.url} answered {path} with non-JSON (HTTP {r.status_code})") from e
            if r.status_code != 200:
                raise ModelError(f"gpu agent at {self.url}: {path} failed (HTTP {r.status_code}): {data.get('error')}")
            answer: dict[str, Any] = data
            return answer
        raise AgentUnavailable(
            f"gpu agent at {self.url} is not answering ({last} after {self.retries + 1} attempts); "
            "is `facesetd gpu-agent serve` running there?"
        )

    def health(self) -> dict[str, Any]:
        """GET /v1/health (also checks the token)."""
        self._health = self._request("GET", "/v1/health")
        return self._health

    def _cached_health(self) -> dict[str, Any]:
        return self._health if self._health is not None else self.health()

    # FaceEngine -------------------------------------------------------------------------------------
    def analyze(self, images: Sequence[bytes], *, pad: bool = True) -> list[list[DetectedFace]]:
        data = self._request("POST", "/v1/analyze", {"images": [b64(b) for b in images], "pad": pad})
        faces = data.get("faces")
        if not isinstance(faces, list) or len(faces) != len(images):
            raise AgentProtocolError(f"gpu agent at {self.url} returned {len(faces or [])} results for {len(images)} images")
        return [[face_from_json(f) for f in fs] for fs in faces]

    def describe(self) -> dict[str, Any]:
        h = self._cached_health()
        return {"agent": self.url, "engine": h.get("engine", {}), "occlusion": h.get("occlusion", {})}

    # OcclusionScorer --------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """Whether the agent has an exported CLIP model (asks the agent once)."""
        return bool(self._cached_health().get("occlusion", {}).get("available"))

    def score(self, images: Sequence[bytes]) -> list[dict[str, float]]:
        data = self._request("POST", "/v1/occlusion", {"images": [b64(b) for b in images]})
        return [{k: float(v) for k, v in s.items()} for s in data["scores"]]
