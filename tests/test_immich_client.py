"""ImmichClient and `facesetd immich check` against the fake Immich server (openapi-core validated)."""

from __future__ import annotations

import argparse
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from daemon.cli import immich as immich_cli
from daemon.config import Config, ImmichSettings, ImmichUser, PathSettings
from daemon.immich.client import (
    CHUNK,
    ImmichAuthError,
    ImmichCancelled,
    ImmichClient,
    ImmichMalformed,
    ImmichNotFound,
    ImmichPermissionError,
    ImmichRequestError,
    ImmichTooLarge,
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
    assert len(faces) == 1 and max(faces[0].image_width, faces[0].image_height) == 640
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


# One deadline per request, cancellation, the size limit, odd answers -----------------------------------

def test_a_trickling_answer_ends_at_its_deadline(fake: FakeImmich, tmp_path: Path) -> None:
    """One byte every 0.3 s never trips a 1 s timeout per read; the whole answer has 1 s, then it is retried."""
    fake.inject("getServerVersion", "trickle", times=2, delay_s=0.3)  # ~60 bytes: 18 s each
    with pytest.raises(ImmichUnavailable, match=r"failed 2 times \(no complete answer within 1 s\)"):
        client(fake, timeout_s=1.0, retries=1).version()
    assert fake.counts["getServerVersion"] == 2
    a = next(iter(fake.assets.values()))
    fake.inject("downloadAsset", "trickle", times=1, delay_s=0.3)
    dl = client(fake, timeout_s=1.0, retries=1).download_original(a.id, tmp_path / "x.part")
    assert dl.path.read_bytes() == a.file.read_bytes()  # the retry got it whole
    assert fake.counts["downloadAsset"] == 2


@pytest.mark.parametrize("kind", ["timeout", "trickle"])
def test_cancel_cuts_off_the_requests_in_flight(fake: FakeImmich, tmp_path: Path, kind: str) -> None:
    """The answer is 30 s away (its headers, or its body one byte at a time): setting the client's Cancel ends
    the request at once with ImmichCancelled, and no request starts after it."""
    a = next(iter(fake.assets.values()))
    fake.inject("downloadAsset", kind, times=1, delay_s=30)
    c = client(fake, timeout_s=60, retries=3)
    raised: list[BaseException] = []

    def download() -> None:
        try:
            c.download_original(a.id, tmp_path / "x.part")
        except BaseException as e:  # noqa: BLE001 - the test looks at what came out
            raised.append(e)

    t = threading.Thread(target=download)
    t.start()
    while fake.counts["downloadAsset"] == 0 and t.is_alive():
        t.join(0.05)
    c.cancel.set()
    t.join(5)
    assert not t.is_alive() and len(raised) == 1 and isinstance(raised[0], ImmichCancelled), raised
    assert "facesetd is stopping" in str(raised[0])
    with pytest.raises(ImmichCancelled):
        c.faces(a.id)
    assert fake.counts["downloadAsset"] == 1 and fake.counts["getFaces"] == 0  # no retry, no new request


def test_an_original_over_the_limit_is_refused_by_its_length_before_its_body(fake: FakeImmich, tmp_path: Path) -> None:
    a = next(iter(fake.assets.values()))
    size = len(a.file.read_bytes())
    dest = tmp_path / "x.part"
    with pytest.raises(ImmichTooLarge, match=f"{size} bytes by its Content-Length, over the limit of {size - 1}") as e:
        client(fake).download_original(a.id, dest, max_bytes=size - 1)
    assert e.value.size == size and not dest.exists()  # not a byte of the body was written
    assert fake.counts["downloadAsset"] == 1  # refused, not retried
    assert client(fake).download_original(a.id, dest, max_bytes=size).size == size  # at the limit: taken


def test_an_original_streamed_without_a_length_is_abandoned_past_the_limit(fake: FakeImmich, tmp_path: Path) -> None:
    a = next(iter(fake.assets.values()))
    a.trailer = bytes(8 * CHUNK)  # 2 MiB more than the photo: a big original
    data = a.file.read_bytes() + a.trailer
    limit = 2 * CHUNK
    fake.inject("downloadAsset", "chunked", times=2)
    dest = tmp_path / "x.part"
    with pytest.raises(ImmichTooLarge, match="while it streamed") as e:
        client(fake).download_original(a.id, dest, max_bytes=limit)
    # abandoned within one read past the limit, far from the end; what was kept on disk is under the limit
    assert limit < e.value.size <= limit + CHUNK < len(data) and dest.stat().st_size <= limit
    dl = client(fake).download_original(a.id, dest, max_bytes=len(data))  # no length, under the limit: taken
    assert dl.path.read_bytes() == data and fake.counts["downloadAsset"] == 2


def test_answers_of_the_wrong_shape_are_malformed_not_type_errors(fake: FakeImmich) -> None:
    a = next(iter(fake.assets.values()))
    c = client(fake)
    fake.inject("getFaces", "malformed", mutate=lambda faces: [{**faces[0], "boundingBoxX1": "x"}])
    with pytest.raises(ImmichMalformed, match=f"faces of asset {a.id}, face 1: boundingBoxX1 is 'x', not a number"):
        c.faces(a.id)
    fake.inject("getFaces", "malformed", mutate=lambda faces: {"faces": faces})
    with pytest.raises(ImmichMalformed, match="the answer is dict, not a list"):
        c.faces(a.id)
    fake.inject("getAssetInfo", "malformed", mutate=lambda asset: [asset])
    with pytest.raises(ImmichMalformed, match="an asset is list, not an object"):
        c.asset(a.id)
    fake.inject("searchAssets", "malformed", mutate=lambda body: [body])
    with pytest.raises(ImmichMalformed, match="not an object with an `assets` object"):
        c.search_metadata({"type": "IMAGE"})
    fake.inject("pingServer", "malformed", mutate=lambda body: ["pong"])
    with pytest.raises(ImmichMalformed, match="not an object"):
        c.ping()
    assert fake.malformed_served == ["getFaces", "getFaces", "getAssetInfo", "searchAssets", "pingServer"]
    assert c.faces(a.id)[0].image_width > 0 and c.asset(a.id).file_size == len(a.file.read_bytes())


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
