"""A fake Immich v3.1.0 server on 127.0.0.1 for the tests and the benchmark.

A real threaded HTTP server (werkzeug) on an ephemeral port. Every request it receives and every
2xx response it serves is checked with openapi-core against Immich's own spec
(../shared/immich/immich-openapi-specs.json); failures are recorded in `validation_errors` and
the tests assert there are none. Error responses (401/403/400/500) are not in Immich's spec at
all (API_NOTES §8), so they follow the server source's shape, `{"message": ...}`, unvalidated. Injected faults
(Injection) change how a validated answer is served: late, one byte at a time, cut, without a length; a
"malformed" one serves on purpose what no spec allows (the answer is validated first, then mutated, and
`malformed_served` lists each), as a buggy or hostile server would.

The library is built from real photos; each asset carries face boxes in ORIGINAL pixels, which the
fake converts to the pixels of a preview (long side `preview_long`) as Immich reports them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

SPEC_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "immich" / "immich-openapi-specs.json"

_api_cache: dict[str, OpenAPI] = {}


def load_spec_dict(path: Path = SPEC_PATH) -> dict[str, Any]:
    spec = json.loads(path.read_text(encoding="utf-8"))
    # Quirk 2 of Immich's spec (docs/DOMAIN.md §4): AssetFaceResponseDto.person is written
    # {"allOf": [PersonResponseDto], "nullable": true}. Under OpenAPI 3.0.3's reading of `nullable`
    # (it cannot make null valid when the allOf member forbids it) openapi-core rejects the
    # `"person": null` that the real server sends for faces not clustered into one of the caller's
    # people. We rewrite exactly this property into the meaning Immich intends, "a PersonResponseDto
    # or null", and keep validation on for everything else, person objects included. The assert
    # makes a future spec that changes the property fail loudly here instead of silently.
    person = spec["components"]["schemas"]["AssetFaceResponseDto"]["properties"]["person"]
    assert person == {"allOf": [{"$ref": "#/components/schemas/PersonResponseDto"}], "nullable": True}, person
    spec["components"]["schemas"]["AssetFaceResponseDto"]["properties"]["person"] = {
        "anyOf": [{"$ref": "#/components/schemas/PersonResponseDto"}, {"enum": [None], "nullable": True}]
    }
    return spec


def openapi(path: Path = SPEC_PATH) -> OpenAPI:
    if str(path) not in _api_cache:
        # Quirk 1: the spec itself fails spec validation (its `bearer` security scheme carries an
        # extra `in`), so only spec validation is switched off; requests and responses are still
        # validated in full.
        _api_cache[str(path)] = OpenAPI.from_dict(load_spec_dict(path), config=Config(spec_validator_cls=None))
    return _api_cache[str(path)]


def ts(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class FakeAsset:
    file: Path
    width: int
    height: int
    faces: list[tuple[int, int, int, int]]  # (x1, y1, x2, y2) in original pixels; [] = not detected yet
    updated_at: datetime
    created_at: datetime
    original_file_name: str = ""
    id: str = field(default_factory=new_id)
    taken_at: datetime = field(default_factory=lambda: datetime(2020, 5, 17, 12, 0, tzinfo=timezone.utc))
    deleted: bool = False
    size_unknown: bool = False  # width/height null in the API
    # GET /assets/{id} (and a search with withExif) carries exifInfo.fileSizeInByte: these bytes (None: the real size)
    file_size: int | None = None
    trailer: bytes = b""  # appended to the served file (after the JPEG's end): unique bytes per asset
    type: str = "IMAGE"  # AssetTypeEnum: "VIDEO" for a clip (its duration_ms then set)
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        self.original_file_name = self.original_file_name or self.file.name


@dataclass
class Injection:
    op: str  # operationId, e.g. "getFaces", "downloadAsset", "searchAssets", "*"
    # "500", "timeout" (answer after delay_s), "401", "403", "drop" (close mid-body), "delete" (delete asset after
    # serving), "trickle" (the body one byte every delay_s), "chunked" (the body streamed with no Content-Length),
    # "malformed" (the answer, validated, then passed through `mutate` as JSON: what no spec allows)
    kind: str
    times: int = 1
    asset_id: str | None = None
    delay_s: float = 2.0
    mutate: Callable[[Any], Any] | None = None


class FakeImmich:
    def __init__(
        self,
        api_key: str = "fake-key-Zq8w3LmP0xY",
        permissions: tuple[str, ...] = ("all",),
        preview_long: int = 640,
        validate: bool = True,
    ) -> None:
        self.api_key = api_key
        self.permissions = list(permissions)
        self.preview_long = preview_long
        self.validate = validate
        self.api = openapi() if validate else None
        self.assets: dict[str, FakeAsset] = {}
        self.owner_id = new_id()
        self.validation_errors: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (operation, detail) in arrival order
        self.counts: dict[str, int] = defaultdict(int)
        self.injections: list[Injection] = []
        self.malformed_served: list[str] = []  # operationIds answered with a deliberately malformed body
        self._stopping = threading.Event()  # set at stop: a delayed or trickling answer ends at once
        # called with the page number after each search page is built (to change the library mid-walk)
        self.on_search: Any = None
        self._lock = threading.Lock()
        self._bytes: dict[Path, bytes] = {}
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-immich")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    # Lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FakeImmich:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeImmich:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Library --------------------------------------------------------------------------------------
    def add(self, asset: FakeAsset) -> FakeAsset:
        self.assets[asset.id] = asset
        return asset

    def inject(self, op: str, kind: str, times: int = 1, asset_id: str | None = None, delay_s: float = 2.0,
               mutate: Callable[[Any], Any] | None = None) -> None:
        with self._lock:
            self.injections.append(Injection(op, kind, times, asset_id, delay_s, mutate))

    def _take_injection(self, op: str, asset_id: str | None) -> Injection | None:
        with self._lock:
            for inj in self.injections:
                if inj.times > 0 and inj.op in (op, "*") and (inj.asset_id is None or inj.asset_id == asset_id):
                    inj.times -= 1
                    return inj
        return None

    def _file_bytes(self, p: Path) -> bytes:
        if p not in self._bytes:
            self._bytes[p] = p.read_bytes()
        return self._bytes[p]

    def preview_size(self, a: FakeAsset) -> tuple[int, int]:
        s = self.preview_long / max(a.width, a.height)
        return max(1, round(a.width * s)), max(1, round(a.height * s))

    # JSON shapes ----------------------------------------------------------------------------------
    def asset_json(self, a: FakeAsset, with_exif: bool = False) -> dict[str, Any]:
        data = self._file_bytes(a.file) + a.trailer
        exif = {"exifInfo": {"fileSizeInByte": len(data) if a.file_size is None else a.file_size}} if with_exif else {}
        return exif | {
            "checksum": __import__("base64").b64encode(hashlib.sha1(data).digest()).decode(),
            "createdAt": ts(a.created_at),
            "duration": a.duration_ms if a.type == "VIDEO" else None,
            "fileCreatedAt": ts(a.taken_at),
            "fileModifiedAt": ts(a.taken_at),
            "hasMetadata": True,
            "height": None if a.size_unknown else a.height,
            "id": a.id,
            "isArchived": False,
            "isEdited": False,
            "isFavorite": False,
            "isOffline": False,
            "isTrashed": False,
            "localDateTime": ts(a.taken_at),
            "originalFileName": a.original_file_name,
            "originalMimeType": "video/mp4" if a.type == "VIDEO" else "image/jpeg",
            "originalPath": f"/data/library/{self.owner_id}/{a.file.name}",
            "ownerId": self.owner_id,
            "thumbhash": None,
            "type": a.type,
            "updatedAt": ts(a.updated_at),
            "visibility": "timeline",
            "width": None if a.size_unknown else a.width,
        }

    def faces_json(self, a: FakeAsset) -> list[dict[str, Any]]:
        pw, ph = self.preview_size(a)
        sx, sy = pw / a.width, ph / a.height
        out = []
        for x1, y1, x2, y2 in a.faces:
            out.append({
                "boundingBoxX1": math.floor(x1 * sx), "boundingBoxY1": math.floor(y1 * sy),
                "boundingBoxX2": round(x2 * sx), "boundingBoxY2": round(y2 * sy),
                "id": new_id(), "imageWidth": pw, "imageHeight": ph,
                "person": None,  # the real server's answer for faces not in one of the caller's people
                "sourceType": "machine-learning",
            })
        return out

    # HTTP -----------------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._dispatch(request)
        return response(environ, start_response)

    def _record_validation(self, what: str, errors: list[Any]) -> None:
        for e in errors:
            cause = getattr(e, "__cause__", None)
            detail = getattr(cause, "schema_errors", None) or cause or e
            with self._lock:
                self.validation_errors.append(f"{what}: {type(e).__name__}: {detail}")

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        op, asset_id, perm, public = self._route(request.method, path, request)
        with self._lock:
            self.counts[op] += 1
            self.requests.append((op, asset_id or ""))
        oreq = WerkzeugOpenAPIRequest(request)
        if self.api is not None:
            self._record_validation(f"request {request.method} {path}", list(self.api.iter_request_errors(oreq)))
        if op == "unknown":
            return self._error(404, f"Cannot {request.method} {path}")
        refused = None if public else self._check_key(request)
        if refused is not None:
            return refused
        inj = self._take_injection(op, asset_id)
        refused = self._injected_error(inj, perm)
        if refused is not None:
            return refused
        if inj and inj.kind == "timeout":
            self._stopping.wait(inj.delay_s)
        if perm and "all" not in self.permissions and perm not in self.permissions:
            return self._error(403, f"Missing required permission: {perm}")
        response = getattr(self, "_op_" + op)(request, asset_id)
        if inj and inj.kind == "delete" and asset_id in self.assets:
            self.assets[asset_id].deleted = True
        if self.api is not None and response.status_code < 300:
            self._record_validation(
                f"response {request.method} {path}",
                list(self.api.iter_response_errors(oreq, WerkzeugOpenAPIResponse(response))),
            )
        return self._served(inj, op, response) if inj else response

    def _served(self, inj: Injection, op: str, response: Response) -> Response:
        """The validated answer as an injected fault serves it: cut, slow, without a length, or malformed."""
        if inj.kind == "drop":
            data = response.get_data()
            response = Response(self._dropping(data), status=200, mimetype=response.mimetype,
                                headers={"Content-Length": str(len(data))}, direct_passthrough=True)
        if inj.kind == "trickle":
            data = response.get_data()
            response = Response(self._trickling(data, inj.delay_s), status=response.status_code,
                                mimetype=response.mimetype, headers={"Content-Length": str(len(data))},
                                direct_passthrough=True)
        if inj.kind == "chunked":
            data = response.get_data()
            response = Response((data[i:i + 65536] for i in range(0, len(data), 65536)), status=response.status_code,
                                mimetype=response.mimetype, direct_passthrough=True)
        if inj.kind == "malformed" and inj.mutate is not None:
            with self._lock:
                self.malformed_served.append(op)
            response = self._json(inj.mutate(json.loads(response.get_data())), response.status_code)
        return response

    def _trickling(self, data: bytes, every_s: float) -> Any:
        for i in range(len(data)):
            yield data[i:i + 1]
            if self._stopping.wait(every_s):
                return

    def _check_key(self, request: Request) -> Response | None:
        key = request.headers.get("x-api-key")
        if not key:
            return self._error(401, "Authentication required")
        if key != self.api_key:
            return self._error(401, "Invalid API key")
        return None

    def _injected_error(self, inj: Any, perm: str | None) -> Response | None:
        """The error response an injected fault stands for (None for faults that are not an error status)."""
        if inj is None:
            return None
        if inj.kind == "500":
            return self._error(500, "Internal server error")
        if inj.kind == "401":
            return self._error(401, "Invalid API key")
        if inj.kind == "403":
            return self._error(403, f"Missing required permission: {perm}")
        return None

    @staticmethod
    def _dropping(data: bytes) -> Any:
        yield data[: len(data) // 2]
        raise ConnectionAbortedError("fake: connection dropped mid-body")

    def _route(self, method: str, path: str, request: Request) -> tuple[str, str | None, str | None, bool]:
        """(operationId, asset id, required permission, public?)"""
        if method == "GET" and path == "/api/server/ping":
            return "pingServer", None, None, True
        if method == "GET" and path == "/api/server/version":
            return "getServerVersion", None, None, True
        if method == "GET" and path == "/api/api-keys/me":
            return "getMyApiKey", None, None, False
        if method == "POST" and path == "/api/search/metadata":
            return "searchAssets", None, "asset.read", False
        if method == "GET" and path == "/api/faces":
            return "getFaces", request.args.get("id"), "face.read", False
        parts = path.split("/")
        if method == "GET" and len(parts) == 4 and parts[1:3] == ["api", "assets"]:
            return "getAssetInfo", parts[3], "asset.read", False
        if method == "GET" and len(parts) == 5 and parts[1:3] == ["api", "assets"] and parts[4] == "original":
            return "downloadAsset", parts[3], "asset.download", False
        return "unknown", None, None, True

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    def _error(self, status: int, message: str) -> Response:
        r = self._json({"message": message}, status)
        r.headers["X-Correlation-ID"] = new_id()
        return r

    def _live(self, asset_id: str | None) -> FakeAsset | None:
        a = self.assets.get(asset_id or "")
        return None if a is None or a.deleted else a

    def _op_pingServer(self, request: Request, _id: Any) -> Response:
        return self._json({"res": "pong"})

    def _op_getServerVersion(self, request: Request, _id: Any) -> Response:
        return self._json({"major": 3, "minor": 1, "patch": 0, "prerelease": None})

    def _op_getMyApiKey(self, request: Request, _id: Any) -> Response:
        return self._json({"createdAt": "2026-01-02T03:04:05.000Z", "updatedAt": "2026-01-02T03:04:05.000Z",
                           "id": "0b7b2a4e-5a6f-4c1d-9e2f-3a4b5c6d7e8f", "name": "facesetd",
                           "permissions": self.permissions})

    def _op_searchAssets(self, request: Request, _id: Any) -> Response:
        # As the server source does (API_NOTES §2): filters inclusive, ORDER BY fileCreatedAt, id,
        # offset paging, nextPage = str(page + 1) while a further row exists.
        body = request.get_json(silent=True) or {}
        page, size = int(body.get("page", 1)), int(body.get("size") or 250)
        after, before = body.get("updatedAfter"), body.get("updatedBefore")
        taken_after = body.get("takenAfter")
        parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
        ms = lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
        rows = [a for a in self.assets.values() if not a.deleted
                and (body.get("type") is None or a.type == body["type"])
                and (after is None or ms(a.updated_at) >= parse(after))
                and (before is None or ms(a.updated_at) <= parse(before))
                and (taken_after is None or ms(a.taken_at) >= parse(taken_after))]
        rows.sort(key=lambda a: (a.taken_at, a.id), reverse=body.get("order") == "desc")
        chunk = rows[(page - 1) * size: (page - 1) * size + size + 1]
        items = [self.asset_json(a, with_exif=bool(body.get("withExif"))) for a in chunk[:size]]
        if self.on_search is not None:
            self.on_search(page)
        return self._json({
            "albums": {"total": 0, "count": 0, "items": [], "facets": []},
            "assets": {"total": len(items), "count": len(items), "items": items, "facets": [],
                       "nextPage": str(page + 1) if len(chunk) > size else None},
        })

    def _op_getFaces(self, request: Request, asset_id: Any) -> Response:
        a = self._live(asset_id)
        if a is None:
            return self._error(400, "Not found or no asset.read access")
        return self._json(self.faces_json(a))

    def _op_getAssetInfo(self, request: Request, asset_id: Any) -> Response:
        a = self._live(asset_id)
        if a is None:
            return self._error(400, "Not found or no asset.read access")
        return self._json(self.asset_json(a, with_exif=True))  # as the server does: exifInfo with the asset

    def _op_downloadAsset(self, request: Request, asset_id: Any) -> Response:
        a = self._live(asset_id)
        if a is None:
            return self._error(400, "Not found or no asset.download access")
        r = Response(self._file_bytes(a.file) + a.trailer, mimetype="application/octet-stream")
        r.headers["Content-Disposition"] = f'attachment; filename="{a.original_file_name}"'
        return r


# Library builders -----------------------------------------------------------------------------------

def photo_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def big_face(w: int, h: int) -> tuple[int, int, int, int]:
    """A face box of a third of the short side, centred: comfortably over 90 px for the test photos."""
    s = min(w, h) // 3
    return (w // 2 - s // 2, h // 2 - s // 2, w // 2 + s // 2, h // 2 + s // 2)


def library(fake: FakeImmich, photos: list[Path], start: datetime | None = None, step_s: int = 60) -> list[FakeAsset]:
    """One asset per photo with one big face, updatedAt one step apart, taken dates shuffled against them."""
    start = start or datetime.now(timezone.utc) - timedelta(days=1)
    out = []
    for i, p in enumerate(photos):
        w, h = photo_size(p)
        out.append(fake.add(FakeAsset(
            file=p, width=w, height=h, faces=[big_face(w, h)],
            updated_at=start + timedelta(seconds=i * step_s), created_at=start + timedelta(seconds=i * step_s),
            # taken dates run against the update order, so search order (fileCreatedAt) differs from it
            taken_at=datetime(2021, 1, 1, tzinfo=timezone.utc) - timedelta(days=i * 7 % 50, hours=i),
        )))
    return out


def copy_of(a: FakeAsset, **changes: Any) -> FakeAsset:
    b = copy.copy(a)
    b.id = new_id()
    for k, v in changes.items():
        setattr(b, k, v)
    return b
