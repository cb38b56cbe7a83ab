"""The real HTTP agent on 127.0.0.1: bearer auth on every endpoint, exact embeddings, clear errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from gpu_agent import open_engines
from gpu_agent.client import HttpAgent
from gpu_agent.errors import AgentAuthError, AgentUnavailable, ModelError
from gpu_agent.face_engine import InsightFaceEngine
from gpu_agent.occlusion import OnnxOcclusionScorer
from gpu_agent.server import AgentServer, make_server, parse_listen
from gpu_agent.settings import AgentSettings, ModelSettings

TOKEN = "test-token-3f9a"
SETTINGS = ModelSettings(face_pack="buffalo_sc")


@pytest.fixture(scope="module")
def engine(models_root: Path) -> InsightFaceEngine:
    return InsightFaceEngine(SETTINGS, models_root)


@pytest.fixture(scope="module")
def agent(engine: InsightFaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    scorer = OnnxOcclusionScorer(SETTINGS, tmp_path_factory.mktemp("no_clip"))  # no export: unavailable
    server = make_server("127.0.0.1:0", engine, scorer, TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _photos(faces_dir: Path) -> list[bytes]:
    paths = sorted((faces_dir / "identities" / "obama").glob("*.jpg"))[:3]
    return [p.read_bytes() for p in paths] + [(faces_dir / "group" / "insightface_t1.jpg").read_bytes(),
                                              (faces_dir / "no_face" / "pp7.jpg").read_bytes()]


@pytest.mark.parametrize("method,path", [("GET", "/v1/health"), ("POST", "/v1/analyze"), ("POST", "/v1/occlusion")])
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer "])
def test_every_endpoint_requires_the_token(agent: AgentServer, method: str, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = requests.request(method, agent.url + path, headers=headers, json={"images": []}, timeout=10)
    assert r.status_code == 401
    assert TOKEN not in r.text


def test_health_with_token(agent: AgentServer) -> None:
    r = requests.get(agent.url + "/v1/health", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["engine"]["pack"] == "buffalo_sc"
    assert body["occlusion"]["available"] is False


def test_http_embeddings_equal_in_process_exactly(agent: AgentServer, engine: InsightFaceEngine, faces_dir: Path) -> None:
    photos = _photos(faces_dir)
    client = HttpAgent(agent.url, TOKEN, timeout_s=30, retries=0)
    remote = client.analyze(photos)
    local = engine.analyze(photos)
    assert [len(f) for f in remote] == [len(f) for f in local] == [1, 1, 1, 6, 0]
    for rf, lf in zip(remote, local):
        for a, b in zip(rf, lf):
            assert a.bbox == b.bbox and a.kps == b.kps and a.det_score == b.det_score
            assert a.embedding.dtype == np.float32
            assert np.array_equal(a.embedding, b.embedding)
    assert client.describe()["engine"]["pack"] == "buffalo_sc"
    assert client.available is False
    with pytest.raises(ModelError, match="export-clip"):
        client.score(photos[:1])


def test_bad_image_is_a_400_not_a_crash(agent: AgentServer) -> None:
    client = HttpAgent(agent.url, TOKEN, timeout_s=30, retries=0)
    with pytest.raises(ModelError, match="HTTP 400"):
        client.analyze([b"not an image"])
    assert client.health()["status"] == "ok"  # still serving


def test_wrong_token_raises_auth_error(agent: AgentServer) -> None:
    with pytest.raises(AgentAuthError, match="401"):
        HttpAgent(agent.url, "nope", retries=2).health()


def test_agent_down_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nobody listens once closed
    url = f"http://127.0.0.1:{port}"
    client = HttpAgent(url, TOKEN, timeout_s=2, retries=2, backoff_s=0.01)
    with pytest.raises(AgentUnavailable, match=f"gpu agent at {url} is not answering .*3 attempts"):
        client.analyze([b"x"])


def test_open_engines_http_mode(agent: AgentServer, models_root: Path) -> None:
    engine, scorer = open_engines(SETTINGS, AgentSettings(mode="http", url=agent.url, token=TOKEN), models_root)
    assert isinstance(engine, HttpAgent) and scorer is engine


def test_server_refuses_to_start_without_token(engine: InsightFaceEngine, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="FACESETD_GPU_AGENT_TOKEN"):
        make_server("127.0.0.1:0", engine, OnnxOcclusionScorer(SETTINGS, tmp_path), "")


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ModelError):
        parse_listen("localhost")


class _FixedScorer:
    """A stand-in occlusion scorer: the CLIP path itself is tested in test_gpu_clip.py."""

    available = True

    def score(self, images: list[bytes]) -> list[dict[str, float]]:
        return [{"mask": 0.1 + len(b) % 7 / 10.0, "sunglasses": 0.123456789012345} for b in images]

    def describe(self) -> dict[str, object]:
        return {"scorer": "fixed", "available": True}


def test_occlusion_over_http(engine: InsightFaceEngine, faces_dir: Path) -> None:
    server = make_server("127.0.0.1:0", engine, _FixedScorer(), TOKEN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = HttpAgent(server.url, TOKEN, retries=0)
        photos = _photos(faces_dir)[:2]
        assert client.available is True
        assert client.score(photos) == _FixedScorer().score(photos)
    finally:
        server.shutdown()
        server.server_close()
