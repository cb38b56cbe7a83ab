"""Every event facesetd records: frozen, typed values, registered by kind.

An event is stored as (kind, subject, payload JSON, vector bytes). Fields typed `np.ndarray`
(embeddings) travel as raw float32 bytes in the `vector` column; everything else as JSON with sorted
keys, so the same event always encodes to the same bytes.

Paths in events are POSIX paths relative to the corpus root (faces) or to the inbox (photos).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

# numpy is imported where a vector is encoded or decoded, not here: `facesetd events`, `--help` and the other
# reading verbs import this module, and most events carry no vector (the import costs ~50 ms, a lookup ~60 ns).

REGISTRY: dict[str, type[Event]] = {}


@dataclass(frozen=True)
class Event:
    KIND: ClassVar[str] = ""
    VECTOR_FIELD: ClassVar[str | None] = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.KIND:
            REGISTRY[cls.KIND] = cls

    @property
    def subject(self) -> str:
        for name in ("path", "faceset", "server"):
            value = getattr(self, name, None)
            if value:
                return str(value)
        return self.KIND


def _frozen(value: Any) -> Any:
    """JSON lists come back as tuples so decoded events equal the ones appended."""
    t = type(value)
    if t is list:
        return tuple([_frozen(v) for v in value])
    if t is dict:
        return {k: _frozen(v) for k, v in value.items()}
    return value


_SCALARS = (str, int, float, bool, type(None))


def encode_event(event: Event) -> tuple[str, str, str, bytes | None]:
    payload = {}
    vector = None
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if f.name == event.VECTOR_FIELD:
            if value is not None:
                import numpy as np

                vector = np.asarray(value, dtype="<f4").tobytes()
        else:
            payload[f.name] = value
    return event.KIND, event.subject, json.dumps(payload, sort_keys=True, separators=(",", ":")), vector


_defaults: dict[type, dict[str, Any]] = {}
_factories: dict[type, list[tuple[str, Any]]] = {}


def _prepare(cls: type[Event]) -> None:
    plain, made = {}, []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            plain[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            made.append((f.name, f.default_factory))
    _defaults[cls], _factories[cls] = plain, made


def decode_event(kind: str, payload: str | bytes, vector: bytes | None) -> Event:
    """Rebuild a stored event. Bypasses the frozen dataclass __init__ (a setattr per field, the slowest
    part of a replay): the payload was written by encode_event, so it holds exactly the fields, or
    fewer for events written before a field was added, which then take their defaults."""
    cls = REGISTRY.get(kind)
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r} (written by a newer facesetd?)")
    return _build(cls, orjson.loads(payload), vector)


def _build(cls: type[Event], values: dict[str, Any], vector: bytes | None) -> Event:
    """The event of class `cls` with these payload values (taken over) and vector bytes."""
    if cls not in _defaults:
        _prepare(cls)
    for k, v in values.items():
        if type(v) not in _SCALARS:
            values[k] = _frozen(v)
    if cls.VECTOR_FIELD:
        if vector is None:
            values[cls.VECTOR_FIELD] = None
        else:
            import numpy as np

            values[cls.VECTOR_FIELD] = np.frombuffer(vector, dtype="<f4")
    event = object.__new__(cls)
    fields = event.__dict__
    fields.update(_defaults[cls])
    for name, factory in _factories[cls]:
        if name not in values:
            fields[name] = factory()
    fields.update(values)
    return event


def stored_problem(kind: str, payload: str | bytes, vector: bytes | None) -> str | None:
    """What is wrong with a stored event, or None when it is what encode_event writes: a known kind; a JSON
    object (strict UTF-8) holding fields of that kind only, every field without a default among them (fewer
    fields: an event written before a field was added, which takes its default); a vector only where the kind
    has one, of whole float32 values: all that decode_event relies on. The log's integrity check
    (state/logcheck.py) asks this of every event; decode_event itself trusts its payload."""
    cls = REGISTRY.get(kind)
    if cls is None:
        return f"unknown event kind {kind!r} (damaged, or written by a newer facesetd)"
    try:
        values = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        return f"{kind} payload is not JSON ({e})"
    if type(values) is not dict:
        return f"{kind} payload is not a JSON object"
    names, required = _payload_fields(cls)
    unknown, missing = values.keys() - names, required - values.keys()
    if unknown or missing:
        return f"{kind} payload" + (f" has fields {kind} does not ({', '.join(sorted(unknown))})" if unknown else "") \
            + (" and" if unknown and missing else "") \
            + (f" lacks its fields {', '.join(sorted(missing))}" if missing else "")
    if vector is not None:
        if cls.VECTOR_FIELD is None:
            return f"{kind} has a vector ({len(vector)} bytes) and its kind has none"
        if len(vector) % 4:
            return f"{kind} vector of {len(vector)} bytes is not whole float32 values"
    return None


_payload_names: dict[type, tuple[frozenset[str], frozenset[str]]] = {}


def _payload_fields(cls: type[Event]) -> tuple[frozenset[str], frozenset[str]]:
    """(the payload's field names, those of them without a default) of an event class."""
    if cls not in _payload_names:
        fields = [f for f in dataclasses.fields(cls) if f.name != cls.VECTOR_FIELD]
        _payload_names[cls] = (
            frozenset(f.name for f in fields),
            frozenset(f.name for f in fields
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING),
        )
    return _payload_names[cls]


# --- The corpus as found on disk ----------------------------------------------------------------


@dataclass(frozen=True)
class CorpusAdopted(Event):
    """A corpus made by the batch scripts was taken over as it is: nothing moved or renumbered."""

    KIND: ClassVar[str] = "corpus_adopted"
    master: dict[str, Any] = field(default_factory=dict)  # the master manifest as found
    facesets: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        return "corpus"


@dataclass(frozen=True)
class FacesetCreated(Event):
    """A faceset exists: adopted, seeded through inbox/faceset_NNN/, or promoted from the pool."""

    KIND: ClassVar[str] = "faceset_created"
    faceset: str = ""
    area: str = ""  # "" (active), "_masked", "_merged" or "_thin" where it was found
    reason: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)  # an adopted per-faceset manifest, as found


@dataclass(frozen=True)
class FaceAdded(Event):
    """A PNG appeared in the corpus (found by a scan, a watcher, or written by the inbox)."""

    KIND: ClassVar[str] = "face_added"
    path: str = ""
    sha256: str = ""
    size: int = 0
    mtime_ns: int = 0
    source: dict[str, Any] = field(default_factory=dict)  # {"photo": ...} or {"immich": {...}}


@dataclass(frozen=True)
class FaceChanged(Event):
    """Same path, new bytes: every check on it runs again."""

    KIND: ClassVar[str] = "face_changed"
    path: str = ""
    sha256: str = ""
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class FaceTouched(Event):
    """Same path, same bytes, new size/mtime stamp (e.g. copied back): remembered so scans stay stat-only."""

    KIND: ClassVar[str] = "face_touched"
    path: str = ""
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class FaceMissing(Event):
    """A PNG the log knows is gone from disk (removed by hand, outside facesetd)."""

    KIND: ClassVar[str] = "face_missing"
    path: str = ""


@dataclass(frozen=True)
class FaceMovedExternally(Event):
    """A PNG moved by hand inside the corpus (same bytes, new place)."""

    KIND: ClassVar[str] = "face_moved_externally"
    path: str = ""  # the old place
    dest: str = ""
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class NameEscaped(Event):
    """A file whose name was not UTF-8 was renamed in place to its escaped name (state.names.escape).

    `path_hex` is the hex of the exact path it had, so the rename can be undone by hand.
    """

    KIND: ClassVar[str] = "name_escaped"
    path: str = ""  # the new (escaped) path, relative to `root`
    root: str = "corpus"
    path_hex: str = ""


# --- Decisions that move files (never delete) ---------------------------------------------------


@dataclass(frozen=True)
class Decision(Event):
    """Base of every event that moves files. `moves` are (src, dest) pairs, carried out after the append."""

    moves: tuple[tuple[str, str], ...] = ()
    check: str = ""  # the check that decided: multi_face, occlusion, near_dup, thin, masked, merge, byte_dup ...
    reason: str = ""  # one human sentence: why
    inputs: dict[str, Any] = field(default_factory=dict)  # scores, thresholds, model and pack


@dataclass(frozen=True)
class FacePruned(Decision):
    """One PNG moved to its faceset's faces/_dropped/."""

    KIND: ClassVar[str] = "face_pruned"
    path: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class FacesetQuarantined(Decision):
    """A whole faceset moved to _masked/, _merged/ or _thin/."""

    KIND: ClassVar[str] = "faceset_quarantined"
    faceset: str = ""
    area: str = ""


@dataclass(frozen=True)
class DecisionReverted(Decision):
    """`facesetd restore`: the moves of decision `target` undone; that check no longer acts on those bytes."""

    KIND: ClassVar[str] = "decision_reverted"
    target: int = 0
    path: str = ""  # what the reverted decision was about (a face path or a faceset)


@dataclass(frozen=True)
class MoveCompleted(Event):
    """The moves of decision `decision` are done on disk (idempotent: replay never moves again)."""

    KIND: ClassVar[str] = "move_completed"
    decision: int = 0

    @property
    def subject(self) -> str:
        return f"decision:{self.decision}"


@dataclass(frozen=True)
class MoveFailed(Event):
    """A move could not be carried out (source gone and destination absent, or destination taken)."""

    KIND: ClassVar[str] = "move_failed"
    decision: int = 0
    error: str = ""

    @property
    def subject(self) -> str:
        return f"decision:{self.decision}"


@dataclass(frozen=True)
class FaceUnrouted(Decision):
    """`facesetd restore` of a routed face (a photo of someone else forced into a faceset, say): its crop leaves
    the faceset for that faceset's faces/_dropped/ (check "restored"). Restoring this event puts it back."""

    KIND: ClassVar[str] = "face_unrouted"
    path: str = ""  # the crop where it was, in the faceset
    sha256: str = ""
    target: int = 0  # the FaceRouted (or ForcedFaceDistant) the user restored


@dataclass(frozen=True)
class FacesetsMerged(Decision):
    """Duplicate identities merged (handlers/merge_identities.py): every pair of the group's centroids lies within
    [identity] merge_distance (complete linkage). The kept PNGs of the others move into the survivor, the group's
    lowest number; the emptied facesets move to _merged/. `facesetd restore <this id>` puts every PNG and folder back."""

    KIND: ClassVar[str] = "facesets_merged"
    faceset: str = ""  # the survivor: the group's oldest faceset (lowest number)
    merged: tuple[str, ...] = ()  # the facesets merged into it, now in _merged/ (merged_into: `faceset`)


MOVE_EVENTS = (FacePruned, FacesetQuarantined, DecisionReverted, FaceUnrouted)


@dataclass(frozen=True)
class FacesetReturned(Decision):
    """A faceset in _thin/ grew back to [thresholds] thin_min_survivors kept PNGs: it moves back among the active
    facesets (check "thin_return"). `facesetd restore` of this event puts it back in _thin/, where it then stays."""

    KIND: ClassVar[str] = "faceset_returned"
    faceset: str = ""
    area: str = ""  # where it was: "_thin"


# --- What the checks found (handlers) -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FaceAnalyzed(Event):
    """Detection and embedding of one corpus PNG, exactly as roop will load it."""

    KIND: ClassVar[str] = "face_analyzed"
    VECTOR_FIELD: ClassVar[str | None] = "embedding"
    path: str = ""
    sha256: str = ""
    face_count: int = 0  # faces at det_thresh on the unpadded PNG (the roop invariant)
    det_score: float = 0.0  # of the best face
    bbox: tuple[float, ...] = ()
    kps: tuple[tuple[float, float], ...] = ()
    quality: float | None = None  # composite crop quality of the best face (gpu_agent.quality), source_terms in
    quality_terms: dict[str, float] = field(default_factory=dict)  # the terms as measured on the PNG itself
    model: dict[str, Any] = field(default_factory=dict)  # pack, providers
    embedding: Any = None  # (512,) float32 of the best face, L2-normalised; None without a face
    # The source photo's face size and sharpness (gpu_agent.source_quality), used in `quality` in place of the
    # PNG's short_edge and sharpness terms: a 512 crop hides how small or soft the face was. {} when the PNG has
    # no measured source (found on disk, or routed before these were measured).
    source_terms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisRequested(Event):
    """Analyse this PNG again: it was added while no face model could be opened (or its analysis is missing)."""

    KIND: ClassVar[str] = "analysis_requested"
    path: str = ""
    sha256: str = ""
    reason: str = ""


@dataclass(frozen=True)
class OcclusionScored(Event):
    """P(mask) and P(dark sunglasses over the eyes) for one corpus PNG."""

    KIND: ClassVar[str] = "occlusion_scored"
    path: str = ""
    sha256: str = ""
    mask: float = 0.0
    sunglasses: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)


# --- Immich ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImmichWatermarkAdvanced(Event):
    """Every asset of this user updated up to `value` is fully handled."""

    KIND: ClassVar[str] = "immich_watermark_advanced"
    server: str = ""
    user: str = ""
    value: str = ""

    @property
    def subject(self) -> str:
        return f"immich:{self.server}:{self.user}"


@dataclass(frozen=True)
class ImmichAssetDeferred(Event):
    """Immich has not run face detection on this asset yet: look again on a later pass."""

    KIND: ClassVar[str] = "immich_asset_deferred"
    server: str = ""
    user: str = ""
    asset_id: str = ""
    undeferred: bool = False  # True: looked at again and settled, stop asking

    @property
    def subject(self) -> str:
        return f"immich:{self.server}:{self.user}"


@dataclass(frozen=True)
class ImmichAssetImported(Event):
    """An original was downloaded and handed to the inbox pipeline (its sha256 is never imported twice)."""

    KIND: ClassVar[str] = "immich_asset_imported"
    server: str = ""
    user: str = ""
    asset_id: str = ""
    sha256: str = ""
    staged: str = ""  # path of the staged original
    original_file_name: str = ""
    taken_at: str | None = None
    faces: tuple[tuple[float, float, float, float], ...] = ()
    # The asset's Immich `checksum` when it was listed: a later pass that lists the same asset with the same
    # checksum skips it without downloading it again ("" in imports recorded before it was kept).
    checksum: str = ""

    @property
    def subject(self) -> str:
        return f"sha256:{self.sha256}"


@dataclass(frozen=True)
class ImmichAssetRefused(Event):
    """An Immich asset that is not imported, and why: the server's answer about it is malformed, or its original
    is over [limits] max_file_bytes. It counts as handled (the watermark moves past it); a too_large one is not
    downloaded again while Immich reports the same checksum. Recorded once per asset, reason, checksum and error."""

    KIND: ClassVar[str] = "immich_asset_refused"
    server: str = ""
    user: str = ""
    asset_id: str = ""  # "" when the listed item had no well-formed id
    reason: str = ""  # malformed | too_large
    error: str = ""  # what was wrong: the field and its value, or the size and where it was read
    checksum: str = ""  # the asset's `checksum` when it was refused ("" when the server gave none)
    size: int = 0  # too_large: bytes, as declared or as far as the download got before it was abandoned

    @property
    def subject(self) -> str:
        return f"immich:{self.server}:{self.user}"


# --- The inbox --------------------------------------------------------------------------------------
# Photo paths are relative to their root: "inbox" (config paths.inbox) or "staging" (Immich originals).
# Pool crops live in <corpus>/_pool/ (outside every faceset folder, so the corpus scan ignores them);
# promoting a pool cluster is a Decision whose moves the Mover carries out like any other.


@dataclass(frozen=True)
class PhotoReceived(Event):
    """A photo arrived; the router will crop and route its faces."""

    KIND: ClassVar[str] = "photo_received"
    path: str = ""
    root: str = "inbox"
    sha256: str = ""
    size: int = 0
    forced_faceset: str = ""  # "faceset_NNN" when dropped into inbox/faceset_NNN/
    provenance: dict[str, Any] = field(default_factory=dict)  # {"photo": path} or {"immich": {...}}, "taken_at"
    # `path` is escaped (state.names) when the name is not UTF-8; then this is the hex of its exact bytes.
    path_hex: str = ""
    # A symbolic link that is not followed (state.names.LINK_REASONS): the router moves the link aside.
    link_problem: str = ""
    # Why the file was recorded without its bytes being read (UNREAD_REASONS; sha256 is then ""): the router
    # moves it aside unread (too_large, not_a_file), leaves it in place deferred (permission) or closes it (vanished).
    unread: str = ""


# A PhotoReceived's `unread`: why its file was recorded without being read.
UNREAD_TOO_LARGE = "too_large"  # its size is over [limits] max_file_bytes: moved to _rejected/too_large/
UNREAD_NOT_A_FILE = "not_a_file"  # a FIFO, socket or device: never opened, moved to _rejected/not_a_file/
UNREAD_PERMISSION = "permission"  # it cannot be opened: left where it is, deferred until it can be read
UNREAD_VANISHED = "vanished"  # a deferred photo whose file is gone when looked at again: closed as vanished
UNREAD_REASONS = (UNREAD_TOO_LARGE, UNREAD_NOT_A_FILE, UNREAD_PERMISSION, UNREAD_VANISHED)


@dataclass(frozen=True)
class PhotoProcessed(Event):
    """Every usable face of a photo was routed; the photo moved to inbox/_processed/."""

    KIND: ClassVar[str] = "photo_processed"
    path: str = ""
    root: str = "inbox"
    sha256: str = ""
    dest: str = ""  # inbox-relative, under _processed/
    faces: tuple[dict[str, Any], ...] = ()  # {"to": faceset | "pool", "crop": path, "distance": d, "quality": q}
    skipped: dict[str, int] = field(default_factory=dict)  # faces not cropped, by reason (small, same_identity)
    note: str = ""  # e.g. "no usable face", "already processed as ..."
    # Why the photo is still where it was received (dest ""): its folder does not let facesetd move it. The inbox
    # does not receive these bytes at that path again while the folder keeps them (`facesetd status` lists it).
    left: str = ""


@dataclass(frozen=True)
class PhotoRejected(Event):
    """A file that is not a readable photo: moved aside to inbox/_rejected/<reason>/, never deleted."""

    KIND: ClassVar[str] = "photo_rejected"
    path: str = ""
    root: str = "inbox"
    sha256: str = ""
    dest: str = ""  # inbox-relative, under _rejected/<reason>/
    # handlers/inbox_files.py REJECT_REASONS, a symbolic link's (state.names.LINK_REASONS), vanished, unknown_root
    reason: str = ""
    error: str = ""
    left: str = ""  # as PhotoProcessed.left: the file stays where it was received, and why


@dataclass(frozen=True)
class PhotoDeferred(Event):
    """A photo left where it is to be taken later: it does not decode yet and was written to recently (its writer
    may not be done), it cannot be read yet (its permissions), or a folder it would be moved into is blocked.

    A later PhotoReceived of the same path supersedes it: new bytes when the writer went on, or the same
    bytes again once the file stayed unchanged for [limits] incomplete_grace_s (then rejected if still
    undecodable), or once it can be read or its folder is one again (daemon.deferred looks every few seconds).
    """

    KIND: ClassVar[str] = "photo_deferred"
    path: str = ""
    root: str = "inbox"
    sha256: str = ""
    # incomplete: it does not decode yet; permission: it cannot be read yet; blocked: a folder it would be moved into
    # is not a folder (each is received again once it can be: daemon/deferred.py)
    reason: str = ""
    error: str = ""  # the decoder's message, why it cannot be read, or which folder is blocked
    age_s: float = 0.0  # seconds since the file was last written, when deferred


@dataclass(frozen=True)
class VideoFramesRouted(Event):
    """A group of a video's sampled frames was routed like photos (their faces' events beside it); the router goes on
    after `t` (handlers/route_video.py). The video stays received until its photo_processed or photo_rejected, so a
    kill -9 mid-video resumes after the last group recorded, and no frame is routed twice."""

    KIND: ClassVar[str] = "video_frames_routed"
    path: str = ""  # the video, as received (PhotoReceived.path)
    root: str = "inbox"
    sha256: str = ""  # of the video file
    size: int = 0  # its bytes, as received: a later group checks the file is still that size (not hashed again)
    t: float = 0.0  # seconds: the time of the last frame routed; the next group starts after it
    frames: int = 0  # frames sampled and routed so far
    faces: int = 0  # face crops written so far
    duration_s: float = 0.0  # the video's duration, for the progress line
    # The PhotoReceived's other fields the next group needs (its exact name bytes, forced faceset, provenance).
    path_hex: str = ""
    forced_faceset: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def received(self) -> PhotoReceived:
        """The video's PhotoReceived again, as the next group routes it (a value, never appended)."""
        return PhotoReceived(path=self.path, root=self.root, sha256=self.sha256, size=self.size,
                             path_hex=self.path_hex, forced_faceset=self.forced_faceset,
                             provenance=dict(self.provenance))


@dataclass(frozen=True, eq=False)
class FaceRouted(Event):
    """The embedding a routed crop was matched with (computed on the source photo), for centroids."""

    KIND: ClassVar[str] = "face_routed"
    VECTOR_FIELD: ClassVar[str | None] = "embedding"
    path: str = ""  # the crop, relative to the corpus
    sha256: str = ""  # of the crop
    faceset: str = ""
    distance: float | None = None  # to the centroid it matched; None when forced or promoted
    quality: float = 0.0
    embedding: Any = None


@dataclass(frozen=True, eq=False)
class PoolFaceAdded(Event):
    """A face that matched no faceset waits in the pool (<corpus>/_pool/<id>.png) for more of its person."""

    KIND: ClassVar[str] = "pool_face_added"
    VECTOR_FIELD: ClassVar[str | None] = "embedding"
    path: str = ""  # _pool/<id>.png, relative to the corpus
    face_id: str = ""
    sha256: str = ""  # of the crop
    photo_sha256: str = ""
    quality: float = 0.0
    source: dict[str, Any] = field(default_factory=dict)
    embedding: Any = None


@dataclass(frozen=True)
class FacesetPromoted(Decision):
    """A pool cluster reached the refine gate: its crops move from _pool/ into a new faceset."""

    KIND: ClassVar[str] = "faceset_promoted"
    faceset: str = ""
    face_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolFacesMatched(Decision):
    """Pool faces now within the match distance of an existing faceset (e.g. one seeded later) move into it."""

    KIND: ClassVar[str] = "pool_faces_matched"
    faceset: str = ""
    face_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaceSlotted(Event):
    """A PNG of an identity with age eras joined era bucket `era` (nearest anchor and year within limits)."""

    KIND: ClassVar[str] = "face_slotted"
    path: str = ""
    sha256: str = ""
    era: str = ""  # the era bucket (a faceset of anchors)
    reason: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)  # distances, years, thresholds, model


@dataclass(frozen=True)
class FaceUnslotted(Event):
    """A PNG of an identity with age eras fits no era (or has no year): it stays unslotted, and why."""

    KIND: ClassVar[str] = "face_unslotted"
    path: str = ""
    sha256: str = ""
    reason: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ThinErasListed(Event):
    """The era buckets holding fewer PNGs than the thin minimum (listed in the master manifest)."""

    KIND: ClassVar[str] = "thin_eras_listed"
    eras: tuple[str, ...] = ()
    threshold: int = 0

    @property
    def subject(self) -> str:
        return "eras"


@dataclass(frozen=True)
class ForcedFaceDistant(Event):
    """A face forced into a faceset (inbox/faceset_NNN/) lies farther from its centroid than [identity]
    match_distance: maybe someone else. It joined as the user asked; `facesetd restore <this id>` takes it out."""

    KIND: ClassVar[str] = "forced_face_distant"
    path: str = ""  # the crop, relative to the corpus
    sha256: str = ""  # of the crop
    faceset: str = ""
    distance: float = 0.0  # cosine distance to the faceset's centroid before it joined
    match_distance: float = 0.0  # [identity] match_distance at the time
    photo: str = ""  # "<root>/<path>" of the photo it came from


@dataclass(frozen=True)
class PoolFacesSeeded(Decision):
    """A photo processed before, dropped again into inbox/faceset_NNN/: its face waiting in the pool moves into
    that faceset (the photo's other faces stay in the pool: one face per photo and identity)."""

    KIND: ClassVar[str] = "pool_faces_seeded"
    faceset: str = ""
    face_ids: tuple[str, ...] = ()
    photo_sha256: str = ""


# --- Era buckets made from a family's dated faces (`facesetd eras split`) ---------------------------------------


@dataclass(frozen=True)
class ErasSplit(Decision):
    """`facesetd eras split`: the dated faces of faceset `faceset` (the family) split into era buckets, one per
    window of `years` years that holds any. Each bucket is a new faceset whose anchors are the family's faces of
    its window (their embeddings; never re-centred): they stay in the family's folder, are slotted into the
    bucket (their `era`) and make its .fsz; new faces of the family are then slotted as with configured buckets.
    Moves no file. `facesetd restore <this id>` unslots every face from the buckets and moves their folders to
    _merged/ (merged back into the family)."""

    KIND: ClassVar[str] = "eras_split"
    faceset: str = ""  # the family: the faceset whose dated faces were split
    years: int = 0  # the width of each window, in years
    # one per bucket, oldest first: {"faceset", "year" (the anchors' median year), "first_year", "last_year",
    # "anchors": [[path, sha256, year], ...] by path}
    buckets: tuple[dict[str, Any], ...] = ()
# --- Corrections by a person (daemon/corrections.py) and uncertain matches -----------------------


@dataclass(frozen=True)
class FaceMoved(Decision):
    """`facesetd move FACE --to faceset_NNN|pool|dropped`: a person moved one face (or `restore` of a move moved
    it back: `undoes`). Out of the pool it is followed by its FaceAdded and FaceRouted, into the pool by its
    PoolFaceAdded. Restoring it moves the face back the same way."""

    KIND: ClassVar[str] = "face_moved"
    path: str = ""  # where the face was (a faceset's faces/ or faces/_dropped/, _pool/ or _pool/_dropped/)
    dest: str = ""  # where it went
    sha256: str = ""
    to: str = ""  # what the person asked for: faceset_NNN, pool or dropped
    face_ids: tuple[str, ...] = ()  # the pool face that left the pool with this move (none otherwise)
    face_id: str = ""  # its pool face id (the crop's name without .png)
    veto: str = ""  # a faceset this face is never matched to or proposed for again (it was moved out of it)
    undoes: int = 0  # the FaceMoved this one moves back (`facesetd restore`), else 0


@dataclass(frozen=True)
class FacesetLabelled(Event):
    """`facesetd label faceset_NNN "Name"`: the person's name for a faceset (manifests, status, logs); the folder
    and .fsz names stay. An empty label takes it off."""

    KIND: ClassVar[str] = "faceset_labelled"
    faceset: str = ""
    label: str = ""
    previous: str = ""  # the label it had ("" for none); `facesetd restore` puts it back
    undoes: int = 0  # the FacesetLabelled this one undoes (`facesetd restore`), else 0


@dataclass(frozen=True)
class FaceCandidate(Event):
    """A pool face just past [identity] match_distance of a faceset (within candidate_band more): it waits in the
    pool, proposed for that faceset, until a person accepts it (`move ID --to faceset_NNN`) or rejects it."""

    KIND: ClassVar[str] = "face_candidate"
    path: str = ""  # _pool/<face_id>.png
    face_id: str = ""
    faceset: str = ""  # the faceset it is proposed for
    distance: float = 0.0  # cosine distance to that faceset's centroid
    match_distance: float = 0.0
    candidate_band: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class CandidateRejected(Event):
    """`facesetd move CANDIDATE --to pool`: not that person. The face stays in the pool and is never proposed for
    or matched to that faceset again; `facesetd restore` proposes it again."""

    KIND: ClassVar[str] = "candidate_rejected"
    path: str = ""  # _pool/<face_id>.png
    face_id: str = ""
    faceset: str = ""
    candidate: int = 0  # the FaceCandidate rejected
    reason: str = ""


@dataclass(frozen=True)
class DecisionReapplied(Decision):
    """`facesetd restore` of a decision_reverted: the original decision's moves are made again, as it decided them
    (the face back in _dropped/ under that decision, the faceset back in its area)."""

    KIND: ClassVar[str] = "decision_reapplied"
    target: int = 0  # the DecisionReverted undone
    original: int = 0  # the decision it had reverted, in force again
    path: str = ""


@dataclass(frozen=True)
class PoolFacesHeld(Event):
    """Pool faces the pool promotion leaves alone (a person undid their promotion): they still match facesets,
    and `facesetd promote` makes a faceset of them when a person asks."""

    KIND: ClassVar[str] = "pool_faces_held"
    face_ids: tuple[str, ...] = ()
    faceset: str = ""  # the faceset of the promotion undone
    promotion: int = 0  # the FacesetPromoted undone
    reason: str = ""


@dataclass(frozen=True)
class DeadLettered(Event):
    """An input a follower failed on with an unexpected error: recorded, set aside, and the follower went on.

    For a photo the file is moved aside to inbox/_rejected/failed/ (`dest`); for any other event its follower's
    position moved past it. `facesetd retry ID` tries it again (DeadLetterRetried). Written by the one error
    boundary (daemon/runner.py, handlers/dispatch.py).
    """

    KIND: ClassVar[str] = "dead_lettered"
    follower: str = ""  # the follower that failed: checks, watcher, promoter, merger (handlers/flow.py FOLLOWERS)
    step: str = ""  # what it was doing: the consumer (handlers.route_photo.route_photo), "receive", ...
    event_position: int = 0  # the event it failed on, or the follower's position for an evaluation (0: an inbox file)
    event_kind: str = ""  # that event's kind
    path: str = ""  # the input's name: the photo (inbox-relative), the face, the faceset
    dest: str = ""  # where the file was moved aside to (inbox-relative), when it is a file
    error: str = ""  # the error's type and message


@dataclass(frozen=True)
class DeadLetterRetried(Event):
    """`facesetd retry ID`: a dead-lettered input tried again. An event's consumers run on it once more (the
    dispatcher); a photo moved aside is moved back to where it arrived (`moves`, inbox-relative) and received anew."""

    KIND: ClassVar[str] = "dead_letter_retried"
    target: int = 0  # the dead_lettered event's position
    path: str = ""
    moves: tuple[tuple[str, str], ...] = ()  # (from, to), inbox-relative: the photo back into the inbox

