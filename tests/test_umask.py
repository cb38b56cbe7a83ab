"""Files the daemon writes get the mode the umask says (0644 under 022), so roop running as another user
can read them; nothing comes out 0600 (mkstemp's mode) whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess
from PIL import Image


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _drop(path: Path, data: bytes, umask: int) -> None:
    """A photo as its owner's tools write it under the same umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o666 & ~umask)


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_every_output_honours_the_umask(tmp_path: Path, faces_dir: Path, models_root: Path, umask: int) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    obama = faces_dir / "identities" / "obama" / "obama.jpg"
    _drop(inbox / "faceset_001" / "obama.jpg", obama.read_bytes(), umask)
    again = tmp_path / "again.jpg"
    with Image.open(obama) as im:
        im.save(again, quality=80)  # the same face re-encoded: a near-duplicate, pruned to _dropped/
    _drop(inbox / "faceset_001" / "obama_again.jpg", again.read_bytes(), umask)
    _drop(inbox / "biden.jpg", (faces_dir / "identities" / "biden" / "biden.jpg").read_bytes(), umask)  # the pool
    _drop(inbox / "notes.jpg", b"not an image\n" * 10, umask)  # _rejected/
    for folder in (data, inbox, inbox / "faceset_001"):  # made by the user, under the same umask
        os.chmod(folder, 0o777 & ~umask)
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    d = DaemonProcess(data, env, umask=umask).start()
    try:
        d.idle()
        file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
        corpus = data / "corpus"
        # the event log's files, while the daemon holds them open (WAL)
        state = [data / "state" / n for n in ("events.sqlite3", "events.sqlite3-wal", "events.sqlite3-shm")]
        # what the daemon writes: crops (faceset, pool), pruned crops, manifests, .fsz, the master manifest
        written = [p for p in corpus.rglob("*") if p.is_file()]
        names = {p.relative_to(corpus).as_posix() for p in written}
        assert "manifest.json" in names
        assert any(n.endswith("faceset_001/manifest.json") for n in names)
        assert any(n.endswith("faceset_001/faceset_001.fsz") for n in names)
        assert any(n.endswith("faceset_001/faceset_001_top8.fsz") for n in names)
        assert any("/faces/_dropped/" in n and n.endswith(".png") for n in names)
        assert any(n.startswith("_pool/") and n.endswith(".png") for n in names)
        # the photos keep the mode they came with, in _processed/ and _rejected/
        moved = [inbox / "_processed/faceset_001/obama.jpg", inbox / "_processed/faceset_001/obama_again.jpg",
                 inbox / "_processed/biden.jpg", inbox / "_rejected/unreadable/notes.jpg"]
        wrong = {str(p.relative_to(data)): oct(_mode(p)) for p in state + written + moved if _mode(p) != file_mode}
        assert not wrong, f"not {oct(file_mode)} under umask {umask:03o}: {wrong}"
        folders = [p for p in data.rglob("*") if p.is_dir()]
        wrong = {str(p.relative_to(data)): oct(_mode(p)) for p in folders if _mode(p) != dir_mode}
        assert not wrong, f"folders not {oct(dir_mode)} under umask {umask:03o}: {wrong}"
    finally:
        assert d.terminate() == 0
