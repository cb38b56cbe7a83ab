"""Corrections by a person, as events: move a face, label a faceset, promote chosen pool faces.

The CLI verbs (`facesetd move`, `label`, `promote`) and the review page call these functions; each records its
events, settles what they lead to (moves, checks, projections) and returns the id of the event it recorded, which
`facesetd restore ID` undoes (daemon/correction_undo.py). They take no lock: the caller holds the data folder's.

A FACE is named by its path relative to the corpus (`faceset_001/faces/x.png`, `faceset_001/faces/_dropped/x.png`,
`_pool/x.png`) or by its face id, the crop's name without `.png` (`3f2a9c01d4e5_0`, as `status` lists
candidates and `events` shows crops).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from handlers.common import dropped_dest
from state import events as ev
from state.correction_queries import FaceRecord
from state.errors import FacesetdError
from state.layout import FACESET_RE, POOL_DIR, face_path, parse_face_path
from state.queries import PoolRow

if TYPE_CHECKING:
    from .pipeline import Pipeline

POOL = "pool"
DROPPED = "dropped"
POOL_DROPPED = f"{POOL_DIR}/_dropped"  # pool faces a person dropped: out of the pool, kept on disk
MOVED = "moved"  # the check recorded on a person's move
MAX_LABEL = 200


class CorrectionError(FacesetdError):
    """A correction that cannot be made as asked (one line, exit 1)."""


@dataclass(frozen=True)
class Located:
    """A face as a correction finds it: in the pool (`pool`) or in a faceset (`face`)."""

    pool: PoolRow | None = None
    face: FaceRecord | None = None


def locate(pipeline: Pipeline, face: str) -> Located:
    """The face a person named: a path relative to the corpus, or a face id (the crop's name without .png)."""
    st = pipeline.state
    name = face.strip().removeprefix("./")
    if name.startswith(POOL_DIR + "/"):
        rows = st.pool_rows_of([name.rsplit("/", 1)[-1].removesuffix(".png")])
        if not rows:
            raise CorrectionError(f"{name} is not a face waiting in the pool")
        return Located(pool=rows[0])
    if "/" in name:
        record = st.face_record(name)
        if record is None:
            raise CorrectionError(f"no face {name} in the corpus (name it by its path relative to the corpus)")
        return Located(face=record)
    face_id = name.removesuffix(".png")
    rows = st.pool_rows_of([face_id])
    if rows:
        return Located(pool=rows[0])
    paths = st.faces_named(face_id + ".png")
    if len(paths) > 1:
        raise CorrectionError(f"{face_id} names {len(paths)} faces ({', '.join(paths)}); name one by its path")
    if not paths:
        raise CorrectionError(f"no face {face_id} in the pool or the facesets")
    record = st.face_record(paths[0])
    assert record is not None
    return Located(face=record)


def _target(pipeline: Pipeline, to: str) -> str:
    if to in (POOL, DROPPED):
        return to
    if not FACESET_RE.match(to):
        raise CorrectionError(f"--to {to!r}: give faceset_NNN, pool or dropped")
    if pipeline.state.faceset_area(to) is None:
        raise CorrectionError(f"no faceset {to}")
    return to


def bring_up_to_date(pipeline: Pipeline) -> None:
    """Before a correction: the state caught up with the log, every pending move done."""
    pipeline.state.catch_up()
    pipeline.mover.finish_pending()


def append_and_settle(pipeline: Pipeline, events: list[ev.Event]) -> int:
    """Append `events`, settle what they lead to; the first one's id."""
    positions = pipeline.log.append(events)
    pipeline.settle()
    return positions[0]


# --- move --------------------------------------------------------------------------------------------


def move_face(pipeline: Pipeline, face: str, to: str) -> int:
    """Move one face to faceset_NNN, the pool or dropped (see the module's docstring for FACE); returns the id of
    the event recorded (face_moved, or candidate_rejected for a candidate sent back to the pool)."""
    bring_up_to_date(pipeline)
    target = _target(pipeline, to)
    found = locate(pipeline, face)
    if found.pool is not None:
        return append_and_settle(pipeline, _from_pool(pipeline, found.pool, target))
    assert found.face is not None
    return append_and_settle(pipeline, _from_faceset(pipeline, found.face, target))


def _free(pipeline: Pipeline, rel: str) -> str:
    """`rel`, or name~2.png, name~3.png ... beside it when a file or a known face is there."""
    folder, name = rel.rsplit("/", 1)
    stem, n, candidate = name.removesuffix(".png"), 1, rel
    while (pipeline.config.corpus_dir / candidate).exists() or pipeline.state.has_face_at(candidate):
        n += 1
        candidate = f"{folder}/{stem}~{n}.png"
    return candidate


def _distance(pipeline: Pipeline, faceset: str, vec: np.ndarray) -> float | None:
    """Cosine distance of `vec` to `faceset`'s centroid (None when it has none)."""
    from handlers.centroids import centroids

    centroid = centroids(pipeline.ctx).get(faceset)
    return None if centroid is None else round(1.0 - float(np.dot(centroid, vec)), 4)


def _pool_added_at(pipeline: Pipeline, row: PoolRow) -> int:
    """The position of the PoolFaceAdded that put this face in the pool (its restore adds it again as it was)."""
    found = pipeline.log.latest(row.path, ev.PoolFaceAdded.KIND)
    return found.position if found is not None else 0


def _from_pool(pipeline: Pipeline, row: PoolRow, target: str) -> list[ev.Event]:
    """A pool face (a candidate or not) to a faceset, to dropped, or (a candidate) back to the plain pool."""
    open_ = pipeline.state.candidates_of_face(row.face_id)
    if target == POOL:
        if not open_:
            raise CorrectionError(f"{row.face_id} is in the pool already (and proposed for no faceset)")
        return [ev.CandidateRejected(path=row.path, face_id=row.face_id, faceset=c.faceset, candidate=c.position,
                                     reason=f"not {c.faceset}'s person, said a person: it stays in the pool")
                for c in open_]
    inputs: dict[str, Any] = {"pool_event": _pool_added_at(pipeline, row),
                              "candidates": [c.position for c in open_]}
    name = row.path.rsplit("/", 1)[-1]
    if target == DROPPED:
        dest = _free(pipeline, f"{POOL_DROPPED}/{name}")
        return [ev.FaceMoved(path=row.path, dest=dest, sha256=row.sha256, to=DROPPED, face_ids=(row.face_id,),
                             face_id=row.face_id, moves=((row.path, dest),), check=MOVED, inputs=inputs,
                             reason=f"dropped by a person out of the pool (to {POOL_DROPPED}/)")]
    if row.photo_sha256 in pipeline.state.photo_shas_in(target):
        raise CorrectionError(f"{target} holds a face of the same photo already (one face per photo and person)")
    vec = np.frombuffer(row.embedding, dtype="<f4")
    area = pipeline.state.faceset_area(target) or ""
    dest = _free(pipeline, face_path(area, target, name))
    st = (pipeline.config.corpus_dir / row.path).stat()
    dist = _distance(pipeline, target, vec)
    accepted = [c for c in open_ if c.faceset == target]
    why = f"candidate accepted into {target} by a person" if accepted else f"moved from the pool into {target} by a person"
    return [
        ev.FaceMoved(path=row.path, dest=dest, sha256=row.sha256, to=target, face_ids=(row.face_id,),
                     face_id=row.face_id, moves=((row.path, dest),), check=MOVED, reason=why,
                     inputs={**inputs, "distance": dist, "match_distance": pipeline.ctx.config.identity.match_distance}),
        ev.FaceAdded(path=dest, sha256=row.sha256, size=st.st_size, mtime_ns=st.st_mtime_ns, source=json.loads(row.source)),
        ev.FaceRouted(path=dest, sha256=row.sha256, faceset=target, distance=dist, quality=row.quality, embedding=vec),
    ]


def _from_faceset(pipeline: Pipeline, rec: FaceRecord, target: str) -> list[ev.Event]:
    """A face of a faceset (kept or dropped) to another faceset, back into its own, to the pool or to dropped."""
    fp = parse_face_path(rec.path)
    assert fp is not None
    # What moving it back into a faceset needs to record it again (restore of a move to the pool).
    inputs: dict[str, Any] = {"size": rec.size, "mtime_ns": rec.mtime_ns, "source": json.loads(rec.source)}
    if target == DROPPED:
        if rec.dropped:
            raise CorrectionError(f"{rec.path} is dropped already")
        dest = dropped_dest(pipeline.ctx, rec.path)
        return [ev.FaceMoved(path=rec.path, dest=dest, sha256=rec.sha256, to=DROPPED, moves=((rec.path, dest),),
                             check=MOVED, inputs=inputs, reason=f"dropped from {rec.faceset} by a person")]
    if target == POOL:
        return _to_pool(pipeline, rec, inputs)
    if target == rec.faceset and not rec.dropped:
        raise CorrectionError(f"{rec.path} is in {target} already")
    dest = _free(pipeline, face_path(pipeline.state.faceset_area(target) or "", target, fp.name))
    why = (f"taken back from {rec.faceset}'s _dropped/ by a person" if target == rec.faceset
           else f"moved from {rec.faceset} to {target} by a person")
    return [ev.FaceMoved(path=rec.path, dest=dest, sha256=rec.sha256, to=target, moves=((rec.path, dest),),
                         check=MOVED, inputs=inputs, reason=why)]


def _to_pool(pipeline: Pipeline, rec: FaceRecord, inputs: dict[str, Any]) -> list[ev.Event]:
    """A face out of its faceset into the pool, never matched to (or proposed for) that faceset again."""
    blob = pipeline.state.face_embedding(rec.path)
    if blob is None:
        raise CorrectionError(f"{rec.path} has no embedding yet (not analysed): it cannot join the pool")
    fp = parse_face_path(rec.path)
    assert fp is not None
    face_id = fp.name.removesuffix(".png")
    dest = f"{POOL_DIR}/{fp.name}"
    if (pipeline.config.corpus_dir / dest).exists() or pipeline.state.pool_rows_of([face_id]):
        raise CorrectionError(f"{dest} is taken in the pool")
    source = json.loads(rec.source)
    veto = "" if rec.dropped else rec.faceset
    return [
        ev.FaceMoved(path=rec.path, dest=dest, sha256=rec.sha256, to=POOL, face_id=face_id, veto=veto,
                     moves=((rec.path, dest),), check=MOVED, inputs=inputs,
                     reason=f"moved from {rec.faceset} to the pool by a person" + (f" (not {veto}'s person)" if veto else "")),
        ev.PoolFaceAdded(path=dest, face_id=face_id, sha256=rec.sha256,
                         photo_sha256=str(source.get("photo_sha256") or rec.sha256), quality=float(rec.quality or 0.0),
                         source=source, embedding=np.frombuffer(blob, dtype="<f4")),
    ]


# --- label ------------------------------------------------------------------------------------------


def label_faceset(pipeline: Pipeline, faceset: str, label: str) -> int:
    """Give `faceset` a person's name (shown in its manifest, the master manifest, status and logs; folder and .fsz
    names stay); an empty label takes it off. Returns the faceset_labelled event's id."""
    bring_up_to_date(pipeline)
    if pipeline.state.faceset_area(faceset) is None:
        raise CorrectionError(f"no faceset {faceset}")
    label = label.strip()
    if "\n" in label or "\r" in label or len(label) > MAX_LABEL:
        raise CorrectionError(f"a label is one line of at most {MAX_LABEL} characters")
    previous = pipeline.state.label_of(faceset)
    if label == previous:
        raise CorrectionError(f"{faceset} is labelled {label!r} already" if label else f"{faceset} has no label")
    position = append_and_settle(pipeline, [ev.FacesetLabelled(faceset=faceset, label=label, previous=previous)])
    pipeline.ctx.log.info("faceset labelled", faceset=faceset, label=label, previous=previous, event_id=position)
    return position


# --- promote ----------------------------------------------------------------------------------------


def promote_pool_faces(pipeline: Pipeline, faces: list[str]) -> int:
    """Make a new faceset of these pool faces (any number, below the refine gate too); one face per photo.
    Returns the faceset_promoted event's id."""
    from handlers.pool import claim_from_pool, next_faceset_number, pool_face_ids
    from state.layout import faceset_name

    bring_up_to_date(pipeline)
    rows: list[PoolRow] = []
    for face in faces:
        found = locate(pipeline, face)
        if found.pool is None:
            raise CorrectionError(f"{face} is not a face waiting in the pool")
        if found.pool.face_id in {r.face_id for r in rows}:
            raise CorrectionError(f"{face} is named twice")
        rows.append(found.pool)
    if not rows:
        raise CorrectionError("name at least one pool face")
    photos = [r.photo_sha256 for r in rows]
    if len(set(photos)) != len(photos):
        raise CorrectionError("two of these faces come from one photo (one face per photo and person)")
    rows.sort(key=lambda r: r.face_id)
    name = faceset_name(next_faceset_number(pipeline.ctx))
    moves, added = claim_from_pool(pipeline.ctx, rows, list(range(len(rows))), name)
    if len(moves) != len(rows):
        raise CorrectionError("a chosen pool crop is missing on disk")
    promoted = ev.FacesetPromoted(
        faceset=name, face_ids=pool_face_ids(moves), moves=tuple(moves), check="user",
        reason=f"promoted by a person: {len(moves)} chosen pool faces",
        inputs={"min_new_faceset": pipeline.ctx.config.identity.min_new_faceset},
    )
    return append_and_settle(pipeline, [promoted, *added])
