"""The flow of facesetd in one place: every event kind, who appends it, the checks that consume it (in the
order the dispatcher runs them) and the projection applier that folds it into the corpus state.

The dispatcher (handlers/dispatch.py) executes FLOW; docs/events.md is rendered from it and state/events.py:

    python -m handlers.flow > docs/events.md

Within one FaceAnalyzed batch the per-image prunes run first, each skipping what an earlier one already decided
on, then era slotting of the survivors, then the faceset rules, which see every prune.
"""

from __future__ import annotations

import dataclasses
import inspect

from state import events as ev
from state.comments import field_comments

from . import embed, era, faceset_rules, multi_face, near_dup, occlusion, route_photo, route_video, thin_return
from .registry import Consumer, Stage, declare

SCAN = ("state.scan", "daemon.corpus_watch")  # a reconcile's scan and the corpus watcher report the same facts
RESTORE = "daemon.pipeline: `facesetd restore <id>` undoes it"
UNDO = "daemon.correction_undo: `facesetd restore <id>` undoes it"  # corrections, promotions, restores
PROMOTION = "daemon.pipeline: evaluates the pool promotion again (handlers.pool.cluster_pool)"

FLOW = declare([
    # --- The corpus as found on disk
    Stage(ev.CorpusAdopted, producers=("state.scan",), applier="_adopted"),
    Stage(ev.FacesetCreated, producers=(*SCAN, "handlers.route_photo", "handlers.route_video", "handlers.pool_seed"),
          applier="_faceset_created",
          readers=(PROMOTION,)),
    Stage(ev.FaceAdded, producers=(*SCAN, "handlers.route_photo", "handlers.pool_seed", "handlers.pool", "handlers.merge_identities",
                                   "daemon.corrections", "daemon.correction_undo"),
          consumers=(Consumer(embed.embed, batch=8), Consumer(thin_return.return_grown, batch=8)),
          applier="_faces_added"),
    Stage(ev.FaceChanged, producers=SCAN, consumers=(Consumer(embed.embed, batch=8),), applier="_face_changed"),
    Stage(ev.FaceTouched, producers=SCAN, applier="_touched_batch"),
    Stage(ev.FaceMissing, producers=SCAN, applier="_face_missing"),
    Stage(ev.FaceMovedExternally, producers=SCAN, applier="_face_moved_externally",
          consumers=(Consumer(thin_return.return_grown, batch=8),)),
    Stage(ev.NameEscaped, producers=("state.scan",),
          record_only="the rename is already done on disk; path_hex lets a person undo it by hand"),
    # --- Decisions that move files (the Mover carries out their moves after the append)
    Stage(ev.FacePruned,
          producers=("handlers.embed", "handlers.multi_face", "handlers.occlusion", "handlers.near_dup"),
          consumers=(Consumer(faceset_rules.apply_faceset_rules, batch=8),), applier="_decided",
          readers=(RESTORE, "daemon.restore_rules: why a routed face is already out of its faceset")),
    Stage(ev.FacesetQuarantined, producers=("handlers.faceset_rules",), applier="_decided", readers=(RESTORE,)),
    Stage(ev.DecisionReverted, producers=("daemon.pipeline", "daemon.correction_undo",
                                                 "handlers.merge_restore"), applier="_reverted",
          readers=(PROMOTION, UNDO),
          consumers=(Consumer(era.relist_thin_eras), Consumer(thin_return.return_grown))),
    Stage(ev.MoveCompleted, producers=("state.mover", "daemon.dry_run"), applier="_moves_completed",
          consumers=(Consumer(thin_return.analyse_returned, batch=64),)),
    Stage(ev.MoveFailed, producers=("state.mover",), applier="_move_failed"),
    Stage(ev.FaceUnrouted, producers=("handlers.unroute",), applier="_decided",
          readers=(RESTORE, "daemon.restore_rules: why a routed face is already out of its faceset")),
    Stage(ev.FacesetReturned, producers=("handlers.thin_return",), applier="_faceset_returned", readers=(RESTORE,)),
    # --- What the checks found
    Stage(ev.FaceAnalyzed, producers=("handlers.embed",), consumers=(
        Consumer(multi_face.check_multi_face, batch=8),
        Consumer(occlusion.check_occlusion, batch=8),
        Consumer(near_dup.check_near_dup, batch=8),
        Consumer(era.slot_into_era, batch=8),
        Consumer(faceset_rules.apply_faceset_rules, batch=8),
    ), applier="_analyzed_batch"),
    Stage(ev.AnalysisRequested, producers=("daemon.pipeline", "handlers.thin_return"),
          consumers=(Consumer(embed.embed, batch=8),)),
    Stage(ev.OcclusionScored, producers=("handlers.occlusion",),
          consumers=(Consumer(faceset_rules.apply_faceset_rules, batch=8),), applier="_occlusion_batch"),
    # --- Immich: the poller's own bookkeeping, read straight from the log by its store
    Stage(ev.ImmichWatermarkAdvanced, producers=("daemon.immich.store",),
          record_only="daemon.immich.store reads the latest one back: where the next poll of that user starts"),
    Stage(ev.ImmichAssetDeferred, producers=("daemon.immich.store",),
          record_only="daemon.immich.store reads them back: assets to look at again on a later poll"),
    Stage(ev.ImmichAssetImported, producers=("daemon.immich.store",),
          record_only="daemon.immich.store reads them back: a sha256 or an unchanged checksum is not imported twice"),
    Stage(ev.ImmichAssetRefused, producers=("daemon.immich.store",),
          record_only="daemon.immich.store reads them back: a refused original is not downloaded again"),
    # --- The inbox
    Stage(ev.PhotoReceived, producers=("daemon.inbox", "daemon.deferred"),
          consumers=(Consumer(route_photo.route_photo),), applier="_photo_received"),
    Stage(ev.PhotoProcessed, producers=("handlers.route_photo", "handlers.route_video"), applier="_photo_done", readers=(PROMOTION,)),
    Stage(ev.PhotoRejected, producers=("handlers.photo_file", "handlers.dead_letter", "handlers.route_video"), applier="_photo_done"),
    Stage(ev.PhotoDeferred, producers=("handlers.route_photo", "handlers.photo_file", "handlers.route_video"),
          applier="_photo_deferred"),
    Stage(ev.VideoFramesRouted, producers=("handlers.route_video",),
          consumers=(Consumer(route_video.continue_video),)),
    Stage(ev.FaceRouted, producers=("handlers.route_photo", "handlers.pool_seed", "handlers.pool", "daemon.corrections"), applier="_face_routed",
          readers=("daemon.pipeline: `facesetd restore <id>` takes the face out of its faceset",)),
    Stage(ev.PoolFaceAdded, producers=("handlers.route_photo", "daemon.corrections"), applier="_pool_face_added"),
    Stage(ev.FacesetPromoted, producers=("handlers.pool", "daemon.corrections"), applier="_faceset_promoted",
          readers=(UNDO,)),
    Stage(ev.PoolFacesMatched, producers=("handlers.pool",), applier="_faceset_promoted"),
    Stage(ev.FaceSlotted, producers=("handlers.era",), applier="_slotted"),
    Stage(ev.FaceUnslotted, producers=("handlers.era",), applier="_unslotted"),
    Stage(ev.ThinErasListed, producers=("handlers.era",), applier="_thin_eras"),
    Stage(ev.ForcedFaceDistant, producers=("handlers.face_assign",),
          readers=("daemon.pipeline: `facesetd restore <id>` takes the face out of its faceset",),
          record_only="a warning for a person: the forced face may be someone else"),
    Stage(ev.PoolFacesSeeded, producers=("handlers.pool_seed",), applier="_faceset_promoted"),
    # --- Era buckets made (`facesetd eras split`)
    Stage(ev.ErasSplit, producers=("handlers.era_split",), consumers=(Consumer(era.relist_thin_eras),),
          applier="_eras_split", readers=(RESTORE,)),
    # --- Corrections by a person (daemon/corrections.py, daemon/correction_undo.py) and uncertain matches
    Stage(ev.FaceMoved, producers=("daemon.corrections", "daemon.correction_undo"), applier="_face_moved",
          readers=(UNDO, "handlers.pool_clusters: a face that left the pool")),
    Stage(ev.FacesetLabelled, producers=("daemon.corrections", "daemon.correction_undo"), applier="_labelled",
          readers=(UNDO,)),
    Stage(ev.FaceCandidate, producers=("handlers.candidates",), applier="_candidate",
          readers=("daemon.correction_undo: restoring a rejection or a move out of the pool proposes it again",)),
    Stage(ev.CandidateRejected, producers=("daemon.corrections",), applier="_candidate_rejected", readers=(UNDO,)),
    Stage(ev.DecisionReapplied, producers=("daemon.correction_undo",), applier="_reapplied"),
    Stage(ev.PoolFacesHeld, producers=("daemon.correction_undo",), applier="_held"),
    Stage(ev.FacesetsMerged, producers=("handlers.merge_identities",), applier="_facesets_merged",
          readers=(RESTORE, "handlers.merge_restore: undoes it, and the prunes it led to")),
    # --- The error boundary (daemon/runner.py): an input set aside after an unexpected error, and tried again
    Stage(ev.DeadLettered, producers=("handlers.dead_letter", "daemon.dead_letters"),
          readers=("daemon.dead_letters: the open ones, for `facesetd status` and `facesetd retry`",),
          record_only="the input was set aside (a photo moved to _rejected/failed/); the follower went on"),
    Stage(ev.DeadLetterRetried, producers=("daemon.dead_letters",),
          readers=("handlers.dispatch: the dead-lettered event's consumers run on it again",),
          record_only="a photo moved back into the inbox is received anew; a failed evaluation runs again"),
])




@dataclasses.dataclass(frozen=True)
class Follower:
    """One follower of the log (or of the files, for the first): where it runs, how it knows where it is, what it
    reads and what it writes. The tracked ones commit through state/processor.py."""

    name: str
    module: str
    position: str  # "tracking `NAME`" for a tracked follower (state/processor.py), else the cursor it keeps
    reads: str
    writes: str


# The way of a photo, from the watcher to the .fsz writer: every follower, in the order a photo meets them. One
# runner (daemon/runner.py, behind one error boundary) runs them all; the daemon and `reconcile` differ only in what
# drives it (daemon/service.py's loop, daemon/pipeline.py's settle). tests/test_flow.py holds every tracking name
# the code commits under, and the runner's steps, to this list.
FOLLOWERS = (
    Follower("watcher", "daemon.watcher, daemon.service, daemon.inbox, daemon.runner",
             "the files: an inbox photo is waiting until its photo_received", "files in inbox/ and corpus/",
             "photo_received (one photo at a time, once the last one is settled); the corpus facts of state.scan"),
    Follower("projection", "state.corpus_state", "tracking `corpus_state`", "every event, in log order",
             "the state tables (the named reads of state/queries.py) and the renderer's dirty marks"),
    Follower("checks", "handlers.dispatch", "tracking `handlers`", "the kinds FLOW gives consumers, in FLOW's order",
             "route_photo's crops and findings, then every check's decisions (face_pruned, ...)"),
    Follower("mover", "state.mover", "decisions without their move_completed (pending_decisions)",
             "every Decision's `moves`", "the files moved, then move_completed"),
    Follower("promoter", "daemon.pipeline, handlers.pool", "tracking `promoter`",
             "photo_processed, faceset_created, decision_reverted since its position",
             "pool_faces_matched, faceset_promoted (with their face_added, face_routed)"),
    Follower("pool clusters", "handlers.pool_clusters, daemon.pool_follow",
             "tracking `pool_clusters:<cluster_distance>`",
             "pool_face_added, faceset_promoted, pool_faces_matched, pool_faces_seeded, face_moved, pool_faces_held",
             "the pool's clusters beside the log (state/pool_projection.py): a restart and `status` read them"),
    Follower("merger", "daemon.pipeline, handlers.merge_identities", "tracking `merger:<merge_distance>`",
             "the facesets whose centroid changed since its position", "facesets_merged (with face_added)"),
    Follower("renderer", "state.render", "the projection's dirty marks", "the facesets marked dirty",
             "each faceset's manifest.json and .fsz files, the master manifest"),
)


# --- docs/events.md ------------------------------------------------------------------------------------------

HEADER = """\
# Events

Every event facesetd records, generated from `handlers/flow.py` (the flow map the dispatcher runs) and
`state/events.py` (the events themselves): `python -m handlers.flow > docs/events.md`. Do not edit by hand.

An event is stored as (kind, subject, payload JSON, vector bytes) in the append-only log. **Written by** names the
modules that append it; **consumed by** the checks the dispatcher runs on it, in that order (with their batch
size); **applied by** the function of `state/corpus_state.py` that folds it into the corpus state (the SQLite
projection the manifests are rendered from). A kind with none of these is recorded only, and says why.
"""


def _fields(cls: type[ev.Event]) -> list[str]:
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a Decision's own fields are documented in Decision
        if dataclasses.is_dataclass(klass) and klass.__module__ == ev.__name__:
            comments.update(field_comments(klass))
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        kind = "float32 vector (stored as bytes)" if f.name == cls.VECTOR_FIELD else str(f.type)
        rows.append(f"| `{f.name}` | `{_cell(kind)}` | {_cell(comments.get(f.name, ''))} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a union type or a comment's "|" would end the table cell


def _doc(cls: type) -> str:
    return " ".join(line.strip() for line in (inspect.getdoc(cls) or "").splitlines() if line.strip())


def render_followers() -> list[str]:
    """The followers table: the way of a photo from the watcher to the .fsz writer."""
    lines = ["## The way of a photo: every follower", "",
             "From the watcher to the `.fsz` writer, in the order a photo meets them (`FOLLOWERS`). A tracked follower"
             " records its events and its new position in one transaction (`state/processor.py` `commit`).", "",
             "| follower | module | where it is | reads | writes |", "|---|---|---|---|---|"]
    lines += [f"| {f.name} | `{f.module}` | {_cell(f.position)} | {_cell(f.reads)} | {_cell(f.writes)} |"
              for f in FOLLOWERS]
    return [*lines, ""]


def render_events() -> str:
    """docs/events.md: the followers, then every kind in the order of the flow map, its fields, writers,
    consumers and applier."""
    lines = [HEADER, *render_followers()]
    for kind, stage in FLOW.items():
        cls = stage.kind
        lines += [f"## `{kind}` ({cls.__name__})", "", _doc(cls), ""]
        if issubclass(cls, ev.Decision):
            lines += ["A decision: its `moves` are carried out by the Mover after the append.", ""]
        lines.append("- written by: " + ", ".join(f"`{p}`" for p in stage.producers))
        if stage.consumers:
            lines.append("- consumed by, in order: " + ", ".join(
                f"`{c.module}.{c.name}`" + (f" (batch {c.batch})" if c.batch > 1 else "") for c in stage.consumers))
        if stage.applier:
            lines.append(f"- applied by: `state.corpus_state.{stage.applier}`")
        for reader in stage.readers:
            module, _, why = reader.partition(": ")
            lines.append(f"- read back by `{module}`" + (f": {why}" if why else ""))
        if stage.record_only:
            lines.append(f"- recorded only: {stage.record_only}")
        lines += ["", *_fields(cls), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render_events(), end="")
