"""Named reads for corrections and candidates (a mixin of CorpusState, beside state/queries.py)."""

from __future__ import annotations

from typing import Any, NamedTuple

from .queries import EMBEDDING_SQL, Queries


class Candidate(NamedTuple):
    """A pool face proposed for a faceset, still in the pool and not vetoed for it."""

    face_id: str
    path: str
    faceset: str
    distance: float
    position: int  # of its FaceCandidate


class FaceRecord(NamedTuple):
    """A face file the state knows, with what a move needs to record it elsewhere (source is JSON text)."""

    path: str
    faceset: str
    dropped: int
    sha256: str
    size: int
    mtime_ns: int
    source: str
    quality: float | None
    area: str


class CorrectionQueries:
    """Reads of the candidates, vetoes and labels tables, and of single faces for a move."""

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:  # pragma: no cover
        raise NotImplementedError  # supplied by Queries

    _CANDIDATES = ("SELECT c.face_id, p.path, c.faceset, c.distance, c.position FROM candidates c"
                   " JOIN pool p ON p.face_id = c.face_id"
                   " LEFT JOIN vetoes v ON v.face_id = c.face_id AND v.faceset = c.faceset WHERE v.face_id IS NULL")

    def candidates(self) -> list[Candidate]:
        """Every open candidate (its face still in the pool, not rejected), by faceset then face id."""
        return [Candidate(*r) for r in self.query(self._CANDIDATES + " ORDER BY c.faceset, c.face_id")]

    def candidates_of_face(self, face_id: str) -> list[Candidate]:
        """The open candidates of one pool face (nearest first)."""
        return [Candidate(*r) for r in self.query(self._CANDIDATES + " AND c.face_id=? ORDER BY c.distance, c.faceset",
                                                  (face_id,))]

    def vetoed(self, face_ids: list[str]) -> set[tuple[str, str]]:
        """(face_id, faceset) pairs a person ruled out, among these faces."""
        found: set[tuple[str, str]] = set()
        for i in range(0, len(face_ids), 500):
            chunk = tuple(face_ids[i : i + 500])
            found.update((f, s) for f, s in self.query(
                f"SELECT face_id, faceset FROM vetoes WHERE face_id IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def held(self) -> set[str]:
        """Pool faces the pool promotion leaves alone (PoolFacesHeld: a person undid their promotion)."""
        return {f for (f,) in self.query("SELECT v.face_id FROM vetoes v JOIN pool p ON p.face_id = v.face_id"
                                         " WHERE v.faceset = '*'")}

    def label_of(self, faceset: str) -> str:
        """The person's name for `faceset` ("" for none)."""
        rows = self.query("SELECT label FROM labels WHERE faceset=?", (faceset,))
        return str(rows[0][0]) if rows else ""

    def labels(self) -> dict[str, str]:
        """faceset -> label, for every labelled faceset."""
        return {f: lbl for f, lbl in self.query("SELECT faceset, label FROM labels ORDER BY faceset")}

    def face_record(self, path: str) -> FaceRecord | None:
        """The face at `path` (kept or dropped, any area), or None."""
        rows = self.query(
            "SELECT x.path, x.faceset, x.dropped, x.sha256, x.size, x.mtime_ns, x.source, x.quality, f.area"
            " FROM faces x JOIN facesets f ON f.name = x.faceset WHERE x.path=?", (path,))
        return FaceRecord(*rows[0]) if rows else None

    def faces_named(self, name: str) -> list[str]:
        """Paths of the faces (kept or dropped, any faceset) whose file is called `name`, by path."""
        return [p for (p,) in self.query("SELECT path FROM faces WHERE name=? ORDER BY path", (name,))]

    def face_embedding(self, path: str) -> bytes | None:
        """The face's embedding (float32 bytes): from its routing (the face on its photo), else its analysis."""
        rows = self.query(
            f"SELECT r.embedding, {EMBEDDING_SQL} FROM faces LEFT JOIN routed r ON r.sha256 = faces.sha256"
            " WHERE faces.path=?", (path,))
        if not rows:
            return None
        routed, analyzed = rows[0]
        found: bytes | None = routed if routed is not None else analyzed
        return found

    def decision_row(self, position: int) -> tuple[str, str, str] | None:
        """(kind, state, subject) of the decision at `position`, or None."""
        rows = self.query("SELECT kind, state, subject FROM decisions WHERE position=?", (position,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def kept_paths_of(self, faceset: str) -> list[str]:
        """Paths of the kept faces of `faceset`, by path."""
        return [p for (p,) in self.query("SELECT path FROM faces WHERE faceset=? AND dropped=0 ORDER BY path",
                                         (faceset,))]

    def face_count_of(self, faceset: str) -> int:
        """How many faces (kept and dropped) `faceset` has."""
        return int(self.query("SELECT COUNT(*) FROM faces WHERE faceset=?", (faceset,))[0][0])


class StateQueries(Queries, CorrectionQueries):
    """Every named read: the corpus state (CorpusState) and its read-only view (state/readonly.py) are both."""
