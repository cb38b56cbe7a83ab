"""Carries out the moves that decisions recorded, idempotently, and records that they are done.

A decision is appended first, then the files move, then MoveCompleted is appended. After a crash
anywhere in between, `finish_pending()` looks at the disk: a source that is gone while its
destination exists means the move already happened. Nothing is ever deleted: a destination that is
already taken is never overwritten (MoveFailed instead).
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from . import events as ev
from .atomic import fsync_dirs
from .corpus_state import CorpusState
from .eventlog import EventLog
from .faults import crash_point

log = structlog.get_logger("facesetd.mover")


def _move_one(corpus: Path, src: str, dest: str, folders: set[Path]) -> str | None:
    """Move corpus/src to corpus/dest. Returns None when done (now or earlier), else an error. The two folders
    are added to `folders`, for the caller to fsync once for all the moves of a decision."""
    s, d = corpus / src, corpus / dest
    if not s.exists():
        return None if d.exists() else f"neither {src} nor {dest} exists"
    if d.exists():
        if s.is_file() and d.is_file() and s.read_bytes() == d.read_bytes():
            # Same bytes already at the destination (a crash after a copy-style move): keep both
            # copies would duplicate the face in the set; the source is the redundant one.
            s.rename(s.with_name(f".{s.name}.moved-dup"))
            return None
        return f"{dest} already exists; refusing to overwrite"
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a plain file where a folder of the layout goes (_masked, say)
        return f"{dest} cannot be made: a file that is not a folder is in its way ({_in_the_way(corpus, dest)})"
    crash_point("move:before_rename")
    os.rename(s, d)
    folders |= {d.parent, s.parent}
    crash_point("move:after_rename")
    return None


def _in_the_way(corpus: Path, dest: str) -> str:
    """The first folder of `dest` (corpus-relative) that is something else."""
    parts = dest.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        p = corpus.joinpath(*parts[:i])
        if (p.exists() or p.is_symlink()) and not p.is_dir():
            return "/".join(parts[:i])
    return "/".join(parts)


class Mover:
    def __init__(self, log_: EventLog, state: CorpusState, corpus: Path) -> None:
        self.log = log_
        self.state = state
        self.corpus = Path(corpus)

    def finish_pending(self) -> int:
        """Carry out every pending decision in log order; returns how many were settled."""
        settled = 0
        for position, moves in self.state.pending_decisions():
            folders: set[Path] = set()
            errors = [err for src, dest in moves if (err := _move_one(self.corpus, src, dest, folders))]
            # Each folder a move touched, fsynced once (a promotion moves many crops between the same two)
            # before the moves are recorded as done.
            fsync_dirs(folders)
            if errors:
                log.error("move failed", decision=position, error="; ".join(errors))
                self.log.append([ev.MoveFailed(decision=position, error="; ".join(errors))])
            else:
                self.log.append([ev.MoveCompleted(decision=position)])
            settled += 1
            self.state.catch_up()
        return settled
