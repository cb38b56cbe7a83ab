"""ImmichClient and `facesetd immich check` against the fake Immich server (openapi-core validated)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from daemon.cli import immich as immich_cli
from daemon.config import Config, ImmichSettings, ImmichUser, PathSettings
from daemon.immich.client import (
    ImmichAuthError,
    ImmichClient,
    ImmichNotFound,
    ImmichPermissionError,
    ImmichRequestError,
    ImmichUnavailable,
)
from state.errors import FacesetdError
from tests.immich_fake import FakeImmich, library

KEY = "fake-key-Zq8w3LmP0xY"


@pytest.fixture
def fake(faces_dir: Path):
    with FakeImmich(api_key=KEY) as f:
        library(f, sorted((faces_dir / "identities" / "obama").glob("*.jpg"))[:3])
        yield f
    assert f.validation_errors == []


def client(fake: FakeImmich, key: str = KEY, **kw) -> ImmichClient:
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("backoff_s", 0.01)
    return ImmichClient(fake.url, key, **kw)


def test_ping_version_permissions(fake: FakeImmich) -> None:
    c = client(fake)
    assert c.ping() is True
    assert c.version() == "3.1.0"
    assert c.my_api_key()["name"] == "facesetd"
    assert c.missing_permissions() == []


def test_faces_and_download(fake: FakeImmich, tmp_path: Path) -> None:
    c = client(fake)
    a = next(iter(fake.assets.values()))
    faces = c.faces(a.id)
    assert len(faces) == 1 and faces[0]["person"] is None and max(faces[0]["imageWidth"], faces[0]["imageHeight"]) == 640
    dl = c.download_original(a.id, tmp_path / "x.part")
    assert dl.path.read_bytes() == a.file.read_bytes()
    import hashlib

    assert dl.sha256 == hashlib.sha256(a.file.read_bytes()).hexdigest()


def test_bad_key_is_one_clear_error_without_the_key(fake: FakeImmich) -> None:
    c = client(fake, key="wrong-key-9f8e7d6c5b")
    with pytest.raises(ImmichAuthError) as e:
        c.my_api_key()
    assert "refused the API key" in str(e.value) and "wrong-key" not in str(e.value)
    assert fake.counts["getMyApiKey"] == 1  # no retry on 4xx


def test_missing_permission(faces_dir: Path) -> None:
    with FakeImmich(api_key=KEY, permissions=("asset.read",)) as f:
        library(f, [faces_dir / "identities" / "biden" / "biden.jpg"])
        c = client(f)
        assert c.missing_permissions() == ["face.read", "asset.download"]
        with pytest.raises(ImmichPermissionError) as e:
            c.faces(next(iter(f.assets)))
        assert "Missing required permission: face.read" in str(e.value) and KEY not in str(e.value)
        assert f.counts["getFaces"] == 1
    assert f.validation_errors == []


def test_retries_5xx_and_timeouts_then_succeeds(fake: FakeImmich) -> None:
    fake.inject("getServerVersion", "500", times=2)
    fake.inject("pingServer", "timeout", times=1, delay_s=1.5)
    c = client(fake, timeout_s=0.5)
    assert c.version() == "3.1.0"
    assert fake.counts["getServerVersion"] == 3
    assert c.ping() is True
    assert fake.counts["pingServer"] == 2


def test_gives_up_after_retries(fake: FakeImmich) -> None:
    fake.inject("getServerVersion", "500", times=10)
    with pytest.raises(ImmichUnavailable, match="failed 3 times"):
        client(fake, retries=2).version()
    assert fake.counts["getServerVersion"] == 3


def test_dropped_download_is_retried(fake: FakeImmich, tmp_path: Path) -> None:
    a = next(iter(fake.assets.values()))
    fake.inject("downloadAsset", "drop", times=1)
    dl = client(fake).download_original(a.id, tmp_path / "x.part")
    assert dl.path.read_bytes() == a.file.read_bytes()
    assert fake.counts["downloadAsset"] == 2


def test_not_found_and_bad_ids(fake: FakeImmich) -> None:
    a = next(iter(fake.assets.values()))
    a.deleted = True
    with pytest.raises(ImmichNotFound):
        client(fake).faces(a.id)
    with pytest.raises(ImmichRequestError):  # never reaches a URL
        client(fake).faces("../../etc/passwd")


def test_unreachable() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ImmichUnavailable, match="unavailable"):
        ImmichClient(f"http://127.0.0.1:{port}", KEY, timeout_s=0.5, retries=1, backoff_s=0.01).ping()


def test_validator_is_live(fake: FakeImmich) -> None:
    """The fake really checks requests against the spec: a date-time without an offset is caught."""
    requests.post(fake.url + "/api/search/metadata", json={"updatedAfter": "2024-01-01T00:00:00"},
                  headers={"x-api-key": KEY}, timeout=5)
    errors, fake.validation_errors[:] = list(fake.validation_errors), []
    assert any("InvalidRequestBody" in e and "2024-01-01T00:00:00" in e for e in errors), errors


# `facesetd immich check` -------------------------------------------------------------------------

ALICE = ImmichUser("alice", "FACESETD_TEST_KEY_ALICE")


def app_for(url: str, tmp_path: Path) -> SimpleNamespace:
    cfg = Config(paths=PathSettings(data_dir=str(tmp_path)),
                 immich=ImmichSettings(url=url, users=(ALICE,), timeout_s=1.0, retries=1))
    return SimpleNamespace(config=cfg)


def run_check(app: SimpleNamespace) -> int:
    return immich_cli.run(argparse.Namespace(immich_verb="check", user=None), app)


def test_check_ok(fake: FakeImmich, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FACESETD_TEST_KEY_ALICE", KEY)
    assert run_check(app_for(fake.url, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "reachable, Immich 3.1.0" in out and "user alice: key 'facesetd' ok" in out and KEY not in out


def test_check_bad_key(fake: FakeImmich, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FACESETD_TEST_KEY_ALICE", "not-the-key-123456")
    with pytest.raises(FacesetdError, match="refused the API key") as e:
        run_check(app_for(fake.url, tmp_path))
    assert "not-the-key" not in str(e.value) + capsys.readouterr().out


def test_check_missing_permission(faces_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FACESETD_TEST_KEY_ALICE", KEY)
    with FakeImmich(api_key=KEY, permissions=("asset.read", "face.read")) as f, \
            pytest.raises(FacesetdError, match="lacks permission asset.download"):
        run_check(app_for(f.url, tmp_path))
    assert f.validation_errors == []


def test_check_unreachable_and_missing_variable(tmp_path: Path, fake: FakeImmich, monkeypatch) -> None:
    monkeypatch.delenv("FACESETD_TEST_KEY_ALICE", raising=False)
    with pytest.raises(FacesetdError, match="environment variable FACESETD_TEST_KEY_ALICE is not set"):
        run_check(app_for(fake.url, tmp_path))
    with pytest.raises(ImmichUnavailable, match="unavailable"):
        run_check(app_for("http://127.0.0.1:9", tmp_path))
