"""The staging folder: originals land here before the inbox pipeline takes them.

Names from the server (originalFileName, asset ids) are untrusted: a name is reduced to a plain
file name of safe characters, and every path is checked to resolve inside the staging folder.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

from state.atomic import file_mode
from state.errors import FacesetdError

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")
MAX_NAME = 100


class StagingError(FacesetdError):
    """A path would leave the staging folder."""


def safe_file_name(name: str, fallback: str = "asset.jpg") -> str:
    """A file name with no folder part, no leading dots, only safe characters and at most MAX_NAME long."""
    name = unicodedata.normalize("NFKC", name or "")
    name = re.split(r"[/\\]", name)[-1]  # the last path component, whichever separator the server used
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:10] if dot else ""
        name = (stem if dot else name)[: MAX_NAME - len(ext) - 1].rstrip(" .") + ("." + ext if ext else "")
    if not name or name in (".", ".."):
        name = fallback
    return name


def inside(root: Path, candidate: Path) -> Path:
    """`candidate` resolved, or StagingError when it is not inside `root`."""
    root_r = root.resolve()
    cand_r = candidate.resolve()
    if cand_r != root_r and root_r not in cand_r.parents:
        raise StagingError(f"refusing a path outside the staging folder {root}: {candidate.name!r}")
    return cand_r


class Staging:
    """A staging folder: partial downloads in .partial/, finished originals in <user>/<sha[:2]>/."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.partial_dir = self.root / ".partial"

    def new_partial(self) -> Path:
        """A fresh, empty file for a download in progress (its name owes nothing to the server)."""
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="dl-", suffix=".part", dir=self.partial_dir)
        try:
            if hasattr(os, "fchmod"):  # mkstemp's 0600: the photo ends in inbox/_processed/, read by others
                os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        return Path(name)

    def place(self, partial: Path, sha256: str, user: str, original_file_name: str) -> Path:
        """Move a finished download to <user>/<sha[:2]>/<sha[:12]>_<safe name>; return its path."""
        folder = inside(self.root, self.root / safe_file_name(user, "user") / sha256[:2])
        folder.mkdir(parents=True, exist_ok=True)
        target = inside(self.root, folder / f"{sha256[:12]}_{safe_file_name(original_file_name)}")
        os.replace(inside(self.root, partial), target)
        return target
