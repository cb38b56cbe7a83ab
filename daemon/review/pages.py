"""What each review page shows, read from the corpus state (a read-only view: state/readonly.py).

Each function returns the template's context: plain dicts and lists, so the server and the static report
(report.py) render the same data with the same templates.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from handlers.centroids import unit
from handlers.pool_clusters import complete_linkage
from handlers.thresholds import IdentityThresholds
from state import events as ev
from state.eventlog import StoredEvent
from state.layout import faceset_number, parse_face_path
from state.queries import Queries
from state.render import Renderer

AREA_NAMES = {"": "active", "_masked": "masked", "_merged": "merged", "_thin": "thin"}
# The timeline: every decision a user may want to see (and undo), and the forced joins that may be someone else.
TIMELINE_KINDS = (ev.FacePruned.KIND, ev.FacesetQuarantined.KIND, ev.FacesetPromoted.KIND, ev.PoolFacesMatched.KIND,
                  ev.PoolFacesSeeded.KIND, ev.DecisionReverted.KIND, ev.FaceUnrouted.KIND, ev.ForcedFaceDistant.KIND)
RESTORABLE = (ev.FacePruned.KIND, ev.FacesetQuarantined.KIND, ev.FaceUnrouted.KIND)
TIMELINE_PAGE = 100  # decisions per timeline page
POOL_CLUSTER_MAX = 4000  # pool faces clustered for the page at most (complete linkage is quadratic in memory)
THUMBS_PER_ROW = 6  # before/after thumbnails of one decision at most


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def facesets(state: Queries, top_n: int) -> dict[str, Any]:
    """The facesets page: every faceset by number with its counts and best faces, quarantined ones marked."""
    tops = state.top_faces_by_faceset(top_n)
    held = state.quarantines()
    reasons = {se.position: se.event for se in state.log.read_positions([p for p, _c in held.values()]).values()}
    cards = []
    for name, area, kept, dropped in state.faceset_summaries():
        card: dict[str, Any] = {"name": name, "number": faceset_number(name), "area": AREA_NAMES.get(area, area),
                                "kept": int(kept), "dropped": int(dropped), "thumbs": tops.get(name, []),
                                "quarantine": None}
        if name in held:
            pos, check = held[name]
            card["quarantine"] = {"event": pos, "check": check, "reason": getattr(reasons.get(pos), "reason", "")}
        cards.append(card)
    cards.sort(key=lambda c: (c["area"] != "active", c["number"], c["name"]))
    kept, dropped = state.image_counts()
    counts = {a: sum(1 for c in cards if c["area"] == a) for a in AREA_NAMES.values()}
    return {"title": "Facesets", "cards": cards, "counts": counts, "images": {"kept": kept, "dropped": dropped},
            "pool_faces": state.pool_size(), "top_n": top_n}


def faceset(state: Queries, corpus: Path, top_n: int, name: str) -> dict[str, Any] | None:
    """One faceset: every face with its quality and scores (as its manifest lists them), and its dropped faces
    with the reason of each prune. None when there is no such faceset."""
    area = state.faceset_area(name)
    if area is None:
        return None
    manifest, _full, top = Renderer(state, corpus, top_n).faceset_manifest(name)  # type: ignore[arg-type]
    in_top = set(top)
    faces = [_face(f, f["file"] in in_top) for f in manifest["faces"]]
    faces.sort(key=lambda f: (not f["top"], -(f["quality"] if f["quality"] is not None else -1.0), f["file"]))
    decided = state.log.read_positions([f["pruned_by"] for f in manifest["dropped"] if f.get("pruned_by")])
    states = state.decision_states([f["pruned_by"] for f in manifest["dropped"] if f.get("pruned_by")])
    dropped = []
    for f in manifest["dropped"]:
        entry = _face(f, False)
        entry["decision"] = None
        pos = f.get("pruned_by")
        se = decided.get(pos) if pos else None
        if se is not None:
            e = se.event
            entry["decision"] = {"event": pos, "kind": se.kind, "check": getattr(e, "check", ""),
                                 "reason": getattr(e, "reason", ""), "inputs": _inputs(getattr(e, "inputs", {})),
                                 "restorable": states.get(pos) in ("pending", "done")}
        dropped.append(entry)
    held = state.quarantines().get(name)
    quarantine = None
    if held:
        found = state.log.read_positions([held[0]]).get(held[0])
        quarantine = {"event": held[0], "check": held[1], "reason": getattr(found.event, "reason", "") if found else ""}
    return {"title": name, "name": name, "area": AREA_NAMES.get(area, area), "faces": faces, "dropped": dropped,
            "fsz": manifest["fsz"], "slotted": len(manifest["slotted"]), "quarantine": quarantine}


def _face(f: dict[str, Any], top: bool) -> dict[str, Any]:
    scores = f.get("scores", {})
    source = f.get("source", {})
    shown = {k: scores[k] for k in ("det_score", "face_count", "mask", "sunglasses") if k in scores}
    return {"file": f["file"], "sha256": f["sha256"], "quality": f.get("quality"), "top": top, "era": f.get("era"),
            "scores": {k: round(v, 3) if isinstance(v, float) else v for k, v in shown.items()},
            "photo": source.get("photo") or source.get("path") or "", "received_as": source.get("received_as", ""),
            "taken_at": source.get("taken_at", "")}


def _inputs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    """A decision's inputs as (name, short text) pairs, for one line under its reason."""
    out = []
    for k, v in sorted(inputs.items()):
        if isinstance(v, float):
            text = f"{v:.4g}"
        elif isinstance(v, dict) and ("pack" in v or "model" in v):  # a model's identity: its name says enough
            text = str(v.get("pack") or v.get("model"))
        elif isinstance(v, (dict, list, tuple)):
            text = json.dumps(v, sort_keys=True, separators=(",", ":"))
        else:
            text = str(v)
        out.append((k, text if len(text) <= 80 else text[:77] + "..."))
    return out


def pool(state: Queries, identity: IdentityThresholds) -> dict[str, Any]:
    """The pool: clusters forming (complete linkage at cluster_distance, as the promotion forms them), each with
    its photos, and the nearest active faceset with the cosine distance of the cluster's centroid to it."""
    rows = state.pool_rows()
    shown = rows[:POOL_CLUSTER_MAX]
    names, matrix = _centroids(state)
    clusters = []
    if shown:
        vecs = np.stack([unit(np.frombuffer(r.embedding, dtype="<f4")) for r in shown])
        for members in complete_linkage(vecs, identity.cluster_distance):
            clusters.append(_cluster(shown, vecs, members, names, matrix))
    clusters.sort(key=lambda c: (-c["photos"], -len(c["faces"]), c["faces"][0]["face_id"]))
    gate = max(1, identity.min_new_faceset)
    return {"title": "Pool", "clusters": [c for c in clusters if c["photos"] >= 2],
            "singles": [c for c in clusters if c["photos"] < 2], "faces": len(rows), "shown": len(shown),
            "gate": gate, "cluster_distance": identity.cluster_distance, "match_distance": identity.match_distance}


def _centroids(state: Queries) -> tuple[list[str], np.ndarray]:
    """The active facesets' unit centroids from the embeddings the log holds (routing first, else analysis)."""
    vectors: dict[str, list[np.ndarray]] = {}
    for faceset_name, _path, _sha, routed, analyzed in state.centroid_inputs():
        blob = routed if routed is not None else analyzed
        if blob is not None:
            vectors.setdefault(faceset_name, []).append(unit(np.frombuffer(blob, dtype="<f4")))
    names = sorted(vectors)
    if not names:
        return [], np.zeros((0, 0), dtype=np.float32)
    return names, np.stack([unit(np.mean(vectors[n], axis=0)) for n in names])


def _cluster(rows: list[Any], vecs: np.ndarray, members: list[int], names: list[str],
             matrix: np.ndarray) -> dict[str, Any]:
    faces = [{"face_id": rows[i].face_id, "sha256": rows[i].sha256, "quality": round(float(rows[i].quality), 3),
              "photo": json.loads(rows[i].source).get("photo", "")} for i in sorted(members)]
    nearest, distance = "", None
    if names:
        centre = unit(vecs[members].mean(axis=0))
        sims = matrix @ centre
        best = int(np.argmax(sims))
        nearest, distance = names[best], round(1.0 - float(sims[best]), 3)
    return {"faces": faces, "photos": len({rows[i].photo_sha256 for i in members}), "nearest": nearest,
            "distance": distance}


def decisions(state: Queries, before: int | None = None) -> dict[str, Any]:
    """The timeline, newest first: each decision with its check, reason and inputs, before/after thumbnails, and
    whether a click can still undo it."""
    stored = state.log.read_newest(TIMELINE_KINDS, TIMELINE_PAGE, before)
    states = state.decision_states([se.position for se in stored])
    paths = sorted({p for se in stored for p in _shown_paths(se.event)})
    shas = state.shas_at(paths)
    # a forced join can be undone while its face is still in its faceset
    forced = {se.position for se in stored
              if isinstance(se.event, ev.ForcedFaceDistant) and state.active_face(se.event.path) is not None}
    items = [_timeline_item(se, states.get(se.position), shas, se.position in forced) for se in stored]
    tops = state.top_faces_by_faceset(THUMBS_PER_ROW) if any(i["kind"] == ev.FacesetQuarantined.KIND for i in items) else {}
    for item in items:
        if item["kind"] == ev.FacesetQuarantined.KIND:  # a whole faceset: its best faces
            item["before"] = tops.get(item["faceset"], [])
    older = stored[-1].position if len(stored) == TIMELINE_PAGE else None
    return {"title": "Decisions", "items": items, "older": older, "head": state.log.head()}


def _shown_paths(e: ev.Event) -> list[str]:
    moves = getattr(e, "moves", ())
    paths = [dest for _src, dest in moves[:THUMBS_PER_ROW]]
    duplicate = getattr(e, "inputs", {}).get("duplicate_of") if isinstance(e, ev.Decision) else None
    if duplicate:
        paths.append(duplicate)
    if isinstance(e, ev.ForcedFaceDistant):
        paths.append(e.path)
    return paths


def _timeline_item(se: StoredEvent[ev.Event], decision_state: str | None, shas: dict[str, str],
                   forced_active: bool) -> dict[str, Any]:
    e = se.event
    item: dict[str, Any] = {"event": se.position, "when": _when(se.time), "kind": se.kind, "subject": e.subject,
                            "check": getattr(e, "check", ""), "reason": getattr(e, "reason", ""),
                            "inputs": _inputs(getattr(e, "inputs", {})), "state": decision_state or "",
                            "before": [], "after": [], "faceset": ""}
    fp = parse_face_path(e.subject)
    item["faceset"] = fp.faceset if fp else (getattr(e, "faceset", "") or "")
    sha = getattr(e, "sha256", "")
    if isinstance(e, (ev.FacePruned, ev.FaceUnrouted)):
        item["before"] = [sha] if sha else []
        twin = shas.get(e.inputs.get("duplicate_of", "")) if e.inputs else None
        item["after"] = [twin] if twin else []
    elif isinstance(e, ev.ForcedFaceDistant):
        item["reason"] = (f"forced into {e.faceset} at cosine distance {e.distance:.3f} from its centroid (match"
                          f" distance {e.match_distance}): maybe someone else")
        item["before"] = [sha] if sha else []
    else:
        moved = [shas[dest] for _src, dest in getattr(e, "moves", ())[:THUMBS_PER_ROW] if dest in shas]
        item["after"] = moved
    item["restorable"] = (se.kind in RESTORABLE and decision_state in ("pending", "done")) or forced_active
    return item
