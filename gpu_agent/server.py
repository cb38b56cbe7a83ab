"""`facesetd gpu-agent serve`: the face engine and occlusion scorer behind a loopback HTTP API.

Every endpoint, /v1/health included, requires `Authorization: Bearer <token>`. Endpoints:
  GET  /v1/health      -> {"status": "ok", "engine": {...}, "occlusion": {...}}
  POST /v1/analyze     {"images": [b64, ...], "pad": true} -> {"faces": [[face, ...], ...]}
  POST /v1/occlusion   {"images": [b64, ...]} -> {"scores": [{"mask": P, "sunglasses": P}, ...]}
Errors are {"error": "..."} with 400 (bad request or image), 401 (token), 404, 409 (scorer unavailable),
413 (body too large) or 500. The standard library server is enough: one client (the daemon), on loopback.
"""

from __future__ import annotations

import hmac
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from .errors import ImageDecodeError, ModelError
from .interface import FaceEngine, OcclusionScorer
from .wire import face_to_json, unb64

log = structlog.get_logger("facesetd.gpu_agent")

# Largest request body accepted: a batch of full-size photos as base64, with room to spare.
MAX_BODY_BYTES = 512 * 1024 * 1024


def parse_listen(listen: str) -> tuple[str, int]:
    """"host:port" (or "[v6]:port") -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ModelError(f"[gpu_agent] listen must be host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's session reuses one connection
    server: AgentServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the default writes to stderr with headers' worth of detail; we log structured lines instead

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="facesetd-gpu-agent"')
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest: no timing hint about how much of the token matched.
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.server.token.encode())
        if not ok:
            self._drain()
            log.warning("gpu agent request refused", path=self.path, reason="missing or wrong bearer token")
            self._send(401, {"error": "missing or wrong bearer token"})
        return ok

    def _drain(self) -> None:
        """Read an unread body so the kept-alive connection stays in sync."""
        n = int(self.headers.get("Content-Length") or 0)
        if 0 < n <= MAX_BODY_BYTES:
            self.rfile.read(n)

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path == "/v1/health":
            self._send(200, {"status": "ok", "engine": self.server.engine.describe(),
                             "occlusion": self.server.scorer.describe()})
        else:
            self._send(404, {"error": f"no such endpoint: GET {self.path}"})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, {"error": f"request body over {MAX_BODY_BYTES} bytes; send smaller batches"})
            return
        started = time.perf_counter()
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
            images = [unb64(s) for s in req.get("images", [])]
            if self.path == "/v1/analyze":
                faces = self.server.engine.analyze(images, pad=bool(req.get("pad", True)))
                body: dict[str, Any] = {"faces": [[face_to_json(f) for f in fs] for fs in faces]}
            elif self.path == "/v1/occlusion":
                if not self.server.scorer.available:
                    self._send(409, {"error": self.server.scorer.describe().get("reason", "occlusion scorer unavailable")})
                    return
                body = {"scores": self.server.scorer.score(images)}
            else:
                self._send(404, {"error": f"no such endpoint: POST {self.path}"})
                return
        except (ValueError, KeyError, TypeError, ImageDecodeError) as e:  # bad JSON, base64 or image
            self._send(400, {"error": f"bad request: {e}"})
            return
        except ModelError as e:
            self._send(409, {"error": str(e)})
            return
        except Exception as e:  # a bug: answer, log, keep serving
            log.exception("gpu agent request failed", path=self.path)
            self._send(500, {"error": f"{type(e).__name__}: {e}"})
            return
        self._send(200, body)
        log.debug("gpu agent request", path=self.path, images=len(images), ms=round((time.perf_counter() - started) * 1e3, 1))


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: FaceEngine, scorer: OcclusionScorer, token: str) -> None:
        if not token:
            raise ModelError("the gpu agent needs a token: set FACESETD_GPU_AGENT_TOKEN (or [gpu_agent] token)")
        self.engine, self.scorer, self.token = engine, scorer, token
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def make_server(listen: str, engine: FaceEngine, scorer: OcclusionScorer, token: str) -> AgentServer:
    """A bound, not yet serving, agent server (port 0 picks a free port: tests)."""
    return AgentServer(parse_listen(listen), engine, scorer, token)
