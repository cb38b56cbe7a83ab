"""The renderer makes what it writes durable without os.sync() (which flushes every file system on the
host), before it clears the dirty marks; a top-N .fsz that equals the full one is stored once."""

from __future__ import annotations

import errno
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from corpus_factory import batch_corpus, write_png
from helpers import cli, open_pipeline, projections, prune, rebuilt_from_log_alone

import state.atomic as atomic


def _adopted(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    batch_corpus(data / "corpus")
    cli(data, "reconcile")
    return data


def _no_os_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("os.sync() flushes every file system on the host")

    monkeypatch.setattr(os, "sync", refuse)


def _inode(path: Path | int) -> tuple[int, int]:
    st = os.fstat(path) if isinstance(path, int) else os.stat(path)
    return st.st_dev, st.st_ino


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs(2) is Linux's")
def test_linux_has_syncfs() -> None:
    assert atomic._syncfs is not None


def test_render_syncs_the_corpus_file_system_before_clearing_the_marks(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = _adopted(tmp_path)
    corpus = data / "corpus"
    p = open_pipeline(data)
    calls: list[tuple[tuple[int, int], list[str]]] = []

    def record(fd: int) -> None:
        calls.append((_inode(fd), sorted(p.state.dirty())))

    _no_os_sync(monkeypatch)
    monkeypatch.setattr(atomic, "_syncfs", record)
    before = (corpus / "faceset_003/manifest.json").read_bytes()
    prune(p, "faceset_003/faces/0002.png")  # settles: moves, then renders faceset_003 and the master
    assert (corpus / "faceset_003/manifest.json").read_bytes() != before
    assert len(calls) == 1, "one syncfs: the render wrote to one file system"
    folder, marks = calls[0]
    assert folder[0] == os.stat(corpus).st_dev  # a folder on the corpus's file system
    assert "faceset_003" in marks  # synced while the marks were still set
    assert p.state.dirty() == []


def test_without_syncfs_every_file_and_folder_written_is_fsynced(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = _adopted(tmp_path)
    corpus = data / "corpus"
    p = open_pipeline(data)
    synced: dict[tuple[int, int], list[str]] = {}
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.setdefault(_inode(fd), sorted(p.state.dirty()))
        real_fsync(fd)

    _no_os_sync(monkeypatch)
    monkeypatch.setattr(atomic, "_syncfs", None)  # as on a system without syncfs(2)
    monkeypatch.setattr(os, "fsync", record)
    prune(p, "faceset_003/faces/0002.png")
    folder = corpus / "faceset_003"
    written = [folder / "manifest.json", folder / "faceset_003.fsz", folder / "faceset_003_top8.fsz",
               corpus / "manifest.json", folder, corpus]
    for path in written:
        assert _inode(path) in synced, f"{path} was not fsynced"
        assert "faceset_003" in synced[_inode(path)], f"{path} was fsynced after the marks were cleared"
    assert p.state.dirty() == []


def test_a_failed_sync_leaves_the_marks_for_the_next_render(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = _adopted(tmp_path)
    p = open_pipeline(data)
    real = atomic._syncfs

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic, "_syncfs", fail)
    monkeypatch.setattr(atomic, "fsync_path", lambda path: fail(0))  # the fallback fails the same way
    prune(p, "faceset_003/faces/0002.png")  # the daemon's render: logged, not raised
    assert "faceset_003" in p.state.dirty()
    with pytest.raises(OSError):  # rebuild's render says so
        p.renderer.render_all()
    monkeypatch.undo()
    assert atomic._syncfs is real
    assert "faceset_003" in p.renderer.render_dirty()  # the next render writes and syncs them
    assert p.state.dirty() == []


def _members(fsz: Path) -> list[str]:
    with zipfile.ZipFile(fsz) as zf:
        return [i.filename for i in zf.infolist()]


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def test_a_faceset_of_top_n_or_fewer_faces_stores_its_fsz_once(tmp_path: Path) -> None:
    data = _adopted(tmp_path)
    corpus = data / "corpus"
    for name, n in (("faceset_001", 4), ("faceset_002", 3), ("faceset_003", 6), ("_masked/faceset_004", 3)):
        folder = corpus / name
        short = folder.name
        full, top = folder / f"{short}.fsz", folder / f"{short}_top8.fsz"
        assert os.path.samefile(full, top), f"{name}: the top .fsz should be the full one"
        assert full.stat().st_nlink == 2 and len(_members(top)) == n
        m = _manifest(folder)
        assert m["fsz"]["top_files"] == [f["file"] for f in m["faces"] + m["slotted"]]
        # no face here was analysed: no mean to measure, each face in the top N for want of an embedding
        assert m["fsz"] == {"full": full.name, "top": top.name, "top_n": 8, "top_files": m["fsz"]["top_files"],
                            "top_cosine": None}
        assert {f["top"]["why"] for f in m["faces"] + m["slotted"]} == {"no embedding"}
    # faceset_003 grows past 8 faces: its top .fsz becomes a file of its own, the full one holds all 9
    folder = corpus / "faceset_003"
    for i in range(6, 9):
        write_png(folder / "faces" / f"{i:04d}.png", 300 + i)
    cli(data, "reconcile")
    full, top = folder / "faceset_003.fsz", folder / "faceset_003_top8.fsz"
    assert not os.path.samefile(full, top)
    assert full.stat().st_nlink == 1 and top.stat().st_nlink == 1
    assert len(_members(full)) == 9 and len(_members(top)) == 8
    assert len(_manifest(folder)["fsz"]["top_files"]) == 8
    # and back to 8: one file again
    prune(open_pipeline(data), "faceset_003/faces/0008.png")
    assert os.path.samefile(full, top) and len(_members(full)) == 8
    linked = projections(corpus)
    cli(data, "rebuild")
    assert projections(corpus) == linked
    assert os.path.samefile(full, top)
    # a copy of the data folder without any projection rebuilds the same bytes from the log
    assert rebuilt_from_log_alone(data, tmp_path / "copy") == linked


def test_where_hard_links_fail_the_top_fsz_is_a_copy_of_the_same_bytes(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = _adopted(tmp_path)
    corpus = data / "corpus"
    linked = projections(corpus)

    def no_links(src: Any, dst: Any, **kw: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    for f in corpus.rglob("*"):
        if f.suffix == ".fsz":
            f.unlink()
    open_pipeline(data).rebuild()
    assert projections(corpus) == linked
    full, top = corpus / "faceset_002/faceset_002.fsz", corpus / "faceset_002/faceset_002_top8.fsz"
    assert not os.path.samefile(full, top) and full.read_bytes() == top.read_bytes()
    assert not list(corpus.rglob(".*.tmp-*"))
    # links possible again: the next render replaces the copy with a link
    monkeypatch.undo()
    open_pipeline(data).rebuild()
    assert os.path.samefile(full, top) and projections(corpus) == linked


def test_a_full_disk_never_leaves_a_manifest_naming_a_missing_fsz(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The .fsz files are written before the manifest that lists them (issue 23): when the disk fills up while a
    faceset's .fsz is written, its manifest is not written either, so no manifest names an .fsz that is not there."""
    import state.render as render

    data = _adopted(tmp_path)
    folder = data / "corpus" / "faceset_001"
    for f in [folder / "manifest.json", *folder.glob("*.fsz")]:
        f.unlink()
    real = render.atomic_write

    def full_disk(path: Path, data: bytes, **kw: Any) -> bool:
        if path.suffix == ".fsz":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, **kw)

    monkeypatch.setattr(render, "atomic_write", full_disk)
    with pytest.raises(OSError):
        open_pipeline(data).renderer.rebuild()
    assert not (folder / "manifest.json").exists()
    monkeypatch.setattr(render, "atomic_write", real)  # the disk has room again: the next render writes both
    cli(data, "rebuild")
    assert _manifest(folder)["fsz"]["full"] == "faceset_001.fsz" and (folder / "faceset_001.fsz").is_file()
