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

from daemon.restore_rules import refusal
from handlers.centroids import unit
from handlers.pool import FORMING_MIN_PHOTOS
from handlers.pool_clusters import average_linkage
from handlers.thresholds import IdentityThresholds
from state import events as ev
from state.correction_queries import StateQueries
from state.eventlog import StoredEvent
from state.layout import AREA_NAMES, faceset_dir, faceset_number, parse_face_path
from state.render import Renderer

# The timeline shows every Decision kind (whatever moves files, a kind added later included: timeline_kinds()) and
# these: the corrections that move no file, and the forced joins that may be someone else.
TIMELINE_EXTRA = (ev.FacesetLabelled.KIND, ev.CandidateRejected.KIND, ev.ForcedFaceDistant.KIND)
TIMELINE_PAGE = 100  # decisions per timeline page
# Decisions whose refusal the timeline explains beside a disabled button: about a whole faceset, refused because it
# changed since (the other refusals are a restore made already, shown as such).
EXPLAINED = (ev.FacesetPromoted.KIND, ev.FacesetsMerged.KIND)
POOL_CLUSTER_MAX = 4000  # pool faces clustered for the page at most (average linkage is quadratic in memory)
THUMBS_PER_ROW = 6  # before/after thumbnails of one decision at most


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def timeline_kinds() -> tuple[str, ...]:
    """Every Decision kind the events module defines, then TIMELINE_EXTRA."""
    decisions = sorted(k for k, cls in ev.REGISTRY.items() if issubclass(cls, ev.Decision))
    return (*decisions, *TIMELINE_EXTRA)


def targets(state: StateQueries, summaries: list[Any] | None = None) -> list[dict[str, str]]:
    """The active facesets a face may be moved to, by name, with their labels (the move forms' choices)."""
    labels = state.labels()
    rows = state.faceset_summaries() if summaries is None else summaries
    return [{"name": r[0], "label": labels.get(r[0], "")} for r in rows if r[1] == ""]


def facesets(state: StateQueries, top_n: int) -> dict[str, Any]:
    """The facesets page: every faceset by number with its label, counts and best faces, quarantined ones marked."""
    tops = state.top_faces_by_faceset(top_n)
    labels = state.labels()
    held = state.quarantines()
    reasons = {se.position: se.event for se in state.log.read_positions([p for p, _c in held.values()]).values()}
    cards = []
    emptied = state.emptied_facesets()  # an undo's empty husk: listed by neither status nor the master manifest
    for name, area, kept, dropped in state.faceset_summaries():
        if name in emptied:
            continue
        card: dict[str, Any] = {"name": name, "number": faceset_number(name), "area": AREA_NAMES.get(area, area),
                                "kept": int(kept), "dropped": int(dropped), "thumbs": tops.get(name, []),
                                "quarantine": None, "label": labels.get(name, "")}
        if name in held:
            pos, check = held[name]
            card["quarantine"] = {"event": pos, "check": check, "reason": getattr(reasons.get(pos), "reason", "")}
        cards.append(card)
    cards.sort(key=lambda c: (c["area"] != "active", c["number"], c["name"]))
    kept, dropped = state.image_counts()
    counts = {a: sum(1 for c in cards if c["area"] == a) for a in AREA_NAMES.values()}
    from daemon.dead_letters import open_dead_letters

    return {"title": "Facesets", "cards": cards, "counts": counts, "images": {"kept": kept, "dropped": dropped},
            "pool_faces": state.pool_size(), "top_n": top_n, "candidates": len(state.candidates()),
            "dead_letters": open_dead_letters(state.log), "paused": []}


def faceset(state: StateQueries, corpus: Path, top_n: int, name: str) -> dict[str, Any] | None:
    """One faceset: every face with its quality and scores (as its manifest lists them), and its dropped faces
    with the reason of each prune. None when there is no such faceset."""
    area = state.faceset_area(name)
    if area is None:
        return None
    manifest, _full, top = Renderer(state, corpus, top_n).faceset_manifest(name)  # type: ignore[arg-type]
    in_top = set(top)
    faces_dir = f"{faceset_dir(area, name)}/faces"
    faces = [_face(f, f["file"] in in_top, faces_dir) for f in manifest["faces"]]
    faces.sort(key=lambda f: (not f["top"], -(f["quality"] if f["quality"] is not None else -1.0), f["file"]))
    held = state.quarantines().get(name)
    quarantine = None
    if held:
        found = state.log.read_positions([held[0]]).get(held[0])
        quarantine = {"event": held[0], "check": held[1], "reason": getattr(found.event, "reason", "") if found else "",
                      "restorable": found is not None and refusal(state, corpus, found) is None}
    label = state.label_of(name)
    return {"title": f"{name} · {label}" if label else name, "name": name, "label": label,
            "area": AREA_NAMES.get(area, area), "faces": faces,
            "dropped": _dropped(state, corpus, manifest["dropped"], faces_dir), "fsz": manifest["fsz"],
            "slotted": len(manifest["slotted"]), "quarantine": quarantine, "eras": _eras(state, name),
            "targets": [t for t in targets(state) if t["name"] != name]}


def _dropped(state: StateQueries, corpus: Path, listed: list[dict[str, Any]], faces_dir: str) -> list[dict[str, Any]]:
    """A faceset's dropped faces, each with the decision that dropped it and whether restore undoes it now."""
    decided = state.log.read_positions([f["pruned_by"] for f in listed if f.get("pruned_by")])
    dropped = []
    for f in listed:
        entry = _face(f, False, faces_dir)
        entry["decision"] = None
        pos = f.get("pruned_by")
        se = decided.get(pos) if pos else None
        if se is not None:
            e = se.event
            entry["decision"] = {"event": pos, "kind": se.kind, "check": getattr(e, "check", ""),
                                 "reason": getattr(e, "reason", ""), "inputs": _inputs(getattr(e, "inputs", {})),
                                 "restorable": refusal(state, corpus, se) is None}
        dropped.append(entry)
    return dropped


def _eras(state: StateQueries, name: str) -> dict[str, Any]:
    """The era buckets `eras split` made of this faceset (a family), or the family this bucket belongs to."""
    made = state.made_era_buckets()
    return {"buckets": [b._asdict() for b in made if b.family == name],
            "family": next((b._asdict() for b in made if b.faceset == name), None)}


def _face(f: dict[str, Any], top: bool, faces_dir: str) -> dict[str, Any]:
    scores = f.get("scores", {})
    source = f.get("source", {})
    shown = {k: scores[k] for k in ("det_score", "face_count", "mask", "sunglasses") if k in scores}
    return {"file": f["file"], "path": f"{faces_dir}/{f['file']}", "sha256": f["sha256"], "quality": f.get("quality"),
            "top": top, "era": f.get("era"),
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


def pool(state: StateQueries, identity: IdentityThresholds) -> dict[str, Any]:
    """The pool: clusters forming (average linkage at cluster_distance, as the promotion forms them), each with
    its photos, and the nearest active faceset with the cosine distance of the cluster's centroid to it."""
    rows = state.pool_rows()
    shown = rows[:POOL_CLUSTER_MAX]
    names, matrix = _centroids(state)
    clusters = []
    if shown:
        vecs = np.stack([unit(np.frombuffer(r.embedding, dtype="<f4")) for r in shown])
        for members in average_linkage(vecs, identity.cluster_distance):
            clusters.append(_cluster(shown, vecs, members, names, matrix))
    clusters.sort(key=lambda c: (-c["photos"], -len(c["faces"]), c["faces"][0]["face_id"]))
    gate = max(1, identity.min_new_faceset)
    return {"title": "Pool", "clusters": [c for c in clusters if c["photos"] >= 2],
            "singles": [c for c in clusters if c["photos"] < 2], "faces": len(rows), "shown": len(shown),
            "gate": gate, "forming": FORMING_MIN_PHOTOS, "cluster_distance": identity.cluster_distance,
            "match_distance": identity.match_distance,
            "targets": targets(state), "candidates": len(state.candidates())}


def candidates(state: StateQueries, top_n: int) -> dict[str, Any]:
    """The candidates: pool faces proposed for a faceset (just past match_distance), each beside that faceset's
    best faces, with the distance; a person accepts or rejects each."""
    found = state.candidates()
    rows = {r.face_id: r for r in state.pool_rows_of(sorted({c.face_id for c in found}))}
    tops = state.top_faces_by_faceset(min(top_n, THUMBS_PER_ROW)) if found else {}
    labels = state.labels()
    items = []
    for c in found:
        row = rows.get(c.face_id)
        items.append({"face_id": c.face_id, "path": c.path, "sha256": row.sha256 if row else "",
                      "quality": round(float(row.quality), 3) if row else None,
                      "photo": json.loads(row.source).get("photo", "") if row else "", "faceset": c.faceset,
                      "label": labels.get(c.faceset, ""), "distance": round(c.distance, 3), "event": c.position,
                      "faceset_thumbs": tops.get(c.faceset, [])})
    items.sort(key=lambda i: (i["distance"], i["faceset"], i["face_id"]))
    return {"title": "Candidates", "items": items}


def _centroids(state: StateQueries) -> tuple[list[str], np.ndarray]:
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
    faces = [{"face_id": rows[i].face_id, "path": rows[i].path, "sha256": rows[i].sha256,
              "quality": round(float(rows[i].quality), 3), "photo": json.loads(rows[i].source).get("photo", "")}
             for i in sorted(members)]
    nearest, distance = "", None
    if names:
        centre = unit(vecs[members].mean(axis=0))
        sims = matrix @ centre
        best = int(np.argmax(sims))
        nearest, distance = names[best], round(1.0 - float(sims[best]), 3)
    return {"faces": faces, "photos": len({rows[i].photo_sha256 for i in members}), "nearest": nearest,
            "distance": distance}


def decisions(state: StateQueries, corpus: Path, before: int | None = None) -> dict[str, Any]:
    """The timeline, newest first: each decision or correction with its check, reason and inputs, before/after
    thumbnails, and a restore button where `facesetd restore` would undo it now (daemon/restore_rules.py)."""
    stored = state.log.read_newest(timeline_kinds(), TIMELINE_PAGE, before)
    states = state.decision_states([se.position for se in stored])
    paths = sorted({p for se in stored for p in _shown_paths(se.event)})
    shas = state.shas_at(paths)
    items = [_timeline_item(se, states.get(se.position), shas) for se in stored]
    for item, se in zip(items, stored):
        why_not = refusal(state, corpus, se)
        item["restorable"] = why_not is None
        # why restore refuses a whole faceset's decision in force (a promoted faceset that grew since): shown beside
        # a disabled button, the same line `facesetd restore` answers
        item["why_not"] = why_not if se.kind in EXPLAINED and item["state"] != "reverted" else None
    whole = {i["faceset"] for i in items if i["whole"] and i["faceset"]}
    tops = state.top_faces_by_faceset(THUMBS_PER_ROW) if whole else {}
    for item in items:
        if item["whole"]:  # about a whole faceset: its best faces
            item["before"] = tops.get(item["faceset"], [])
    older = stored[-1].position if len(stored) == TIMELINE_PAGE else None
    return {"title": "Decisions", "items": items, "older": older, "head": state.log.head()}


def _shown_paths(e: ev.Event) -> list[str]:
    moves = getattr(e, "moves", ())
    paths = [dest for _src, dest in moves[:THUMBS_PER_ROW]]
    duplicate = getattr(e, "inputs", {}).get("duplicate_of") if isinstance(e, ev.Decision) else None
    if duplicate:
        paths.append(duplicate)
    if isinstance(e, (ev.ForcedFaceDistant, ev.CandidateRejected)):
        paths.append(e.path)
    return paths


def _reason(e: ev.Event) -> str:
    if isinstance(e, ev.ForcedFaceDistant):
        return (f"forced into {e.faceset} at cosine distance {e.distance:.3f} from its centroid (match"
                f" distance {e.match_distance}): maybe someone else")
    if isinstance(e, ev.FacesetLabelled):
        now = f"labelled {e.label!r}" if e.label else "label taken off"
        return f"{now}" + (f" (was {e.previous!r})" if e.previous else "") + (f"; undoes event {e.undoes}" if e.undoes else "")
    return str(getattr(e, "reason", ""))


def _pictures(e: ev.Event, shas: dict[str, str]) -> tuple[list[str], list[str]]:
    """Before and after thumbnails: the face a decision is about and its twin, or the faces it moved."""
    sha = getattr(e, "sha256", "")
    if isinstance(e, (ev.FacePruned, ev.FaceUnrouted)):
        twin = shas.get(e.inputs.get("duplicate_of", "")) if e.inputs else None
        return ([sha] if sha else []), ([twin] if twin else [])
    if isinstance(e, (ev.ForcedFaceDistant, ev.FaceMoved)):
        return ([sha] if sha else []), []
    if isinstance(e, ev.CandidateRejected):
        return ([shas[e.path]] if e.path in shas else []), []
    return [], [shas[dest] for _src, dest in getattr(e, "moves", ())[:THUMBS_PER_ROW] if dest in shas]


def _timeline_item(se: StoredEvent[ev.Event], decision_state: str | None, shas: dict[str, str]) -> dict[str, Any]:
    e = se.event
    before, after = _pictures(e, shas)
    fp = parse_face_path(e.subject)
    faceset = fp.faceset if fp else (getattr(e, "faceset", "") or "")
    dest = getattr(e, "to", "")
    return {"event": se.position, "when": _when(se.time), "kind": se.kind, "subject": e.subject,
            "check": getattr(e, "check", ""), "reason": _reason(e), "inputs": _inputs(getattr(e, "inputs", {})),
            "state": decision_state or "", "before": before, "after": after, "faceset": faceset,
            "to": dest if dest.startswith("faceset_") else "", "restorable": False,
            # no face pictured: a whole faceset's (a quarantine, a label, eras split, a merge) best faces instead
            "whole": not before and not after and bool(faceset) and fp is None}
