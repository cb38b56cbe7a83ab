"""handlers/inbox_hold.py on real files: what a rename takes is kept only when it is the file read, and what is
put back never replaces anything. The daemon-level scenarios are in tests/test_inbox_receipt.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from handlers import inbox_hold
from handlers.plain_file import NotAFile, TooLarge, read_plain, sha256_plain
from state import events as ev


def _receipt(inbox: Path, rel: str) -> tuple[bytes, ev.PhotoReceived, inbox_hold.IsIt]:
    data, read = read_plain(inbox / rel, 1 << 20)
    sha = hashlib.sha256(data).hexdigest()
    e = ev.PhotoReceived(path=rel, sha256=sha, size=len(data))
    return data, e, inbox_hold.same_bytes(read, sha, 1 << 20)


def test_the_file_read_is_held_and_its_name_is_free(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"first")
    _data, e, is_it = _receipt(tmp_path, "a.jpg")
    hold = inbox_hold.hold_path(tmp_path, e)
    assert inbox_hold.take(tmp_path, "a.jpg", hold, is_it) == inbox_hold.Taken(True)
    assert hold.read_bytes() == b"first" and not (tmp_path / "a.jpg").exists()
    assert hold.parent.name == inbox_hold.HOLD_DIR and hold == inbox_hold.hold_path(tmp_path, e)  # the same on a rerun


@pytest.mark.parametrize("how", ["in place", "renamed over", "a folder"])
def test_other_bytes_are_put_back_where_they_were(tmp_path: Path, how: str) -> None:
    (tmp_path / "a.jpg").write_bytes(b"first")
    _data, e, is_it = _receipt(tmp_path, "a.jpg")
    if how == "in place":
        with open(tmp_path / "a.jpg", "wb") as f:  # same inode, same size: only the bytes differ
            f.write(b"other")
    elif how == "renamed over":
        (tmp_path / ".new").write_bytes(b"second version")
        os.replace(tmp_path / ".new", tmp_path / "a.jpg")
    else:
        (tmp_path / "a.jpg").unlink()
        (tmp_path / "a.jpg").mkdir()
        (tmp_path / "a.jpg" / "inside.jpg").write_bytes(b"inside")
    taken = inbox_hold.take(tmp_path, "a.jpg", inbox_hold.hold_path(tmp_path, e), is_it)
    assert taken == inbox_hold.Taken(False, "a.jpg")
    assert not (tmp_path / inbox_hold.HOLD_DIR).exists()  # tidied: nothing held
    if how == "a folder":
        assert (tmp_path / "a.jpg" / "inside.jpg").read_bytes() == b"inside"
    else:
        assert (tmp_path / "a.jpg").read_bytes() in (b"other", b"second version")


def test_put_back_never_replaces_a_newer_file(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"first")
    _data, e, _is_it = _receipt(tmp_path, "a.jpg")
    hold = inbox_hold.hold_path(tmp_path, e)
    hold.parent.mkdir()
    os.rename(tmp_path / "a.jpg", hold)
    (tmp_path / "a.jpg").write_bytes(b"newer")
    (tmp_path / "a_1.jpg").write_bytes(b"a neighbour")
    assert inbox_hold.put_back(tmp_path, hold, "a.jpg") == "a_2.jpg"
    assert [(tmp_path / n).read_bytes() for n in ("a.jpg", "a_1.jpg", "a_2.jpg")] == [b"newer", b"a neighbour",
                                                                                       b"first"]
    with pytest.raises(FileExistsError):
        inbox_hold.rename_noreplace(tmp_path / "a_2.jpg", tmp_path / "a.jpg")
    assert (tmp_path / "a.jpg").read_bytes() == b"newer"


def test_a_fifo_is_never_opened_and_a_big_file_never_read_past_the_limit(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(NotAFile, match="FIFO"):
        read_plain(tmp_path / "pipe.jpg", 100)  # would block forever if it were opened for reading
    with pytest.raises(NotAFile):
        sha256_plain(tmp_path / "pipe.jpg")
    with open(tmp_path / "big.jpg", "wb") as f:
        f.truncate(1 << 30)
    with pytest.raises(TooLarge) as err:
        read_plain(tmp_path / "big.jpg", 1 << 20)
    assert err.value.size == 1 << 30 and err.value.limit == 1 << 20
