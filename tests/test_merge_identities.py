"""Merging duplicate identities with real photos and the real buffalo_sc models, through the CLI a user runs:
two facesets seeded with different photos of one person merge into the older one, a faceset of someone else
stays, `reconcile --dry-run` shows the merge first, `restore` puts every file back byte for byte, and the
projections are the log's (a rebuild from the log alone gives the same bytes) after the merge and after its
restore."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, drop, images, projections, rebuilt_from_log_alone
from helpers import log_events as events

from handlers.merge_identities import linkage_groups, seeded_components
from state import events as ev
from tests.handler_fixtures import GivenScorer, decisions, events_of, pipeline, png, write_corpus

OBAMA_A = ("obama/obama.jpg", "obama/obama1.jpg")  # faceset_001
BIDEN = ("biden/biden.jpg", "biden/biden2.jpg")  # faceset_002: someone else
OBAMA_B = ("obama/obama2.jpg", "obama/obama3.jpg")  # faceset_003: obama again, other photos


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


def corpus_bytes(corpus: Path) -> dict[str, str]:
    """sha256 of every file under the corpus; the master manifest without provenance.log_position (the position of
    the last event that changed what it shows, which a restore, itself an event, moves on)."""
    out = {}
    for p in sorted(corpus.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p == corpus / "manifest.json":
            master = json.loads(data)
            master["provenance"].pop("log_position")
            data = json.dumps(master, sort_keys=True).encode()
        out[str(p.relative_to(corpus))] = hashlib.sha256(data).hexdigest()
    return out


def kinds_of(data: Path, env: dict[str, str], kind: str) -> list[dict]:
    return [e for e in events(data, env) if e["kind"] == kind]


@pytest.mark.slow
def test_same_person_merges_into_the_older_and_restore_puts_everything_back(
        tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    inbox, corpus = data / "inbox", data / "corpus"
    ids = faces_dir / "identities"
    drop(ids, inbox, *OBAMA_A, into="faceset_001")
    drop(ids, inbox, *BIDEN, into="faceset_002")
    drop(ids, inbox, *OBAMA_B, into="faceset_003")
    # merge_distance 0: no two centroids are that close, so the corpus is built without any merge first
    cli(data, "reconcile", env={**env, "FACESETD_IDENTITY_MERGE_DISTANCE": "0"})
    assert not kinds_of(data, env, "facesets_merged")
    assert [len(list((corpus / f"faceset_00{i}/faces").glob("*.png"))) for i in (1, 2, 3)] == [2, 2, 2]
    before = corpus_bytes(corpus)

    # the dry run names the merge it would make and changes nothing
    shown = cli(data, "reconcile", "--dry-run", env=env).stdout
    line = next(x for x in shown.splitlines() if "facesets_merged" in x)
    assert "faceset_001" in line and "faceset_003 merged into faceset_001" in line
    assert "faceset_002" not in line
    assert corpus_bytes(corpus) == before and not kinds_of(data, env, "facesets_merged")

    # at the default distance (a new one: every faceset is looked at) obama's second faceset joins his first
    out = cli(data, "reconcile", env=env).stdout
    assert "merged 1 faceset into others" in out
    (merge,) = kinds_of(data, env, "facesets_merged")
    payload = merge["payload"]
    assert payload["faceset"] == "faceset_001" and payload["merged"] == ["faceset_003"]
    assert 0 < payload["inputs"]["max_pair_distance"] <= payload["inputs"]["merge_distance"] == 0.6  # buffalo_sc's (PACK_IDENTITY)
    moved = sorted(p.name for p in (corpus / "faceset_001/faces").glob("*.png"))
    assert len(moved) == 4 and not list((corpus / "_merged/faceset_003/faces").glob("*.png"))
    assert not (corpus / "faceset_003").exists() and (corpus / "faceset_002/faces").is_dir()
    # the moved faces were analysed again in the survivor, as new faces are
    dests = {dest for src, dest in payload["moves"] if "/" in src}
    assert len(dests) == 2 and all(d.startswith("faceset_001/faces/") for d in dests)
    analysed = {e["payload"]["path"] for e in kinds_of(data, env, "face_analyzed") if e["id"] > merge["id"]}
    assert analysed == dests
    master = json.loads((corpus / "manifest.json").read_text())
    assert [(m["name"], m["into"], m["decision"]) for m in master["merged"]] == [
        ("faceset_003", "faceset_001", merge["id"])]
    assert sorted(f["name"] for f in master["facesets"]) == ["faceset_001", "faceset_002"]
    assert json.loads((corpus / "_merged/faceset_003/manifest.json").read_text())["merged_into"] == "faceset_001"
    assert rebuilt_from_log_alone(data, tmp_path / "rebuilt1") == projections(corpus)

    # a second reconcile merges nothing more
    cli(data, "reconcile", env=env)
    assert len(kinds_of(data, env, "facesets_merged")) == 1

    # restore: every PNG and folder back, the projections as they were
    out = cli(data, "restore", str(merge["id"]), env=env).stdout
    assert f"restored event {merge['id']}" in out
    assert corpus_bytes(corpus) == before
    assert rebuilt_from_log_alone(data, tmp_path / "rebuilt2") == projections(corpus)
    # the restored pair stays apart, and restoring twice is a one-line error
    cli(data, "reconcile", env=env)
    assert len(kinds_of(data, env, "facesets_merged")) == 1 and (corpus / "faceset_003/faces").is_dir()
    again = cli(data, "restore", str(merge["id"]), env=env, check=False)
    assert again.returncode == 1 and "already restored" in again.stderr



def _engines(face_engine):
    return lambda: (face_engine, GivenScorer())


def test_restore_undoes_the_near_dup_prune_a_merge_led_to(tmp_path: Path, face_engine, crops) -> None:
    """A moved face that is a near-duplicate of one in the survivor: one of the two is pruned after the merge;
    restoring the merge restores that prune too, and every PNG and projection is as before the merge."""
    corpus = tmp_path / "corpus"
    files = {f"faceset_001/faces/{n}.png": png(crops[n]) for n in ("obama", "obama1")}
    files.update({f"faceset_002/faces/{n}.png": png(crops[n]) for n in ("biden", "biden2")})
    files.update({f"faceset_003/faces/{n}.png": png(crops[n]) for n in ("obama_copy", "obama2")})
    files["faceset_003/faces/obama1.png"] = png(crops["obama3"])  # a name the survivor has: it becomes obama1~2
    original = write_corpus(corpus, files)
    no_thin = "[thresholds]\nthin_min_survivors = 0\n"  # the survivor stays active after its prune
    p = pipeline(tmp_path, _engines(face_engine), no_thin)  # merging off: the corpus as it was adopted
    p.reconcile()
    assert images(corpus) == original and not decisions(p, "near_dup")
    before = projections(corpus)

    p = pipeline(tmp_path, _engines(face_engine), no_thin, merge=True)
    p.reconcile()
    ((pos, merge),) = decisions(p, "merge")
    assert isinstance(merge, ev.FacesetsMerged) and (merge.faceset, merge.merged) == ("faceset_001", ("faceset_003",))
    assert ("faceset_003/faces/obama1.png", "faceset_001/faces/obama1~2.png") in merge.moves
    assert merge.moves[-1] == ("faceset_003", "_merged/faceset_003")
    ((_p, near),) = decisions(p, "near_dup")  # the copy and the original of obama now share a faceset
    assert {near.path, near.inputs["duplicate_of"]} == {"faceset_001/faces/obama.png",
                                                        "faceset_001/faces/obama_copy.png"}
    assert p.state.faceset_area("faceset_002") == "" and p.state.faceset_area("faceset_003") == "_merged"

    p.restore(pos)
    assert images(corpus) == original
    reverted = [e for _p, e in events_of(p, ev.DecisionReverted)]
    assert [e.check for e in reverted] == ["near_dup", "merge"]
    now = projections(corpus)
    assert {k: v for k, v in now.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"}
    p.rebuild()
    assert projections(corpus) == now
    # the pair is not merged again
    p.reconcile()
    assert len(decisions(p, "merge")) == 1 and images(corpus) == original


def _unit(*xs: float) -> np.ndarray:
    v = np.zeros(512, dtype=np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def test_complete_linkage_never_chains_and_the_incremental_search_finds_what_a_full_one_does() -> None:
    """A chain a-b-c (each neighbour within the distance, the ends not): single linkage would join all three,
    complete linkage keeps every group's pairs within it. Seeded from one changed faceset, the search closes the
    components it touches and finds the groups a pass over every centroid finds."""
    def at(deg: float) -> np.ndarray:
        return _unit(math.cos(math.radians(deg)), math.sin(math.radians(deg)))

    names = ["faceset_001", "faceset_002", "faceset_003", "faceset_004", "faceset_005"]
    # 0, 55 and 110 degrees: neighbours at cosine distance 0.43, the ends at 1.34; 004/005: far away, close together
    vecs = np.stack([at(0), at(55), at(110), _unit(0, 0, 1, 0.2), _unit(0, 0, 1, 0.25)])
    t = 0.5
    full = [g for c in seeded_components(vecs, list(range(5)), t + 1e-3)
            for g in linkage_groups([names[i] for i in c], vecs[c], t, set())]
    assert sorted((g.survivor, g.merged) for g in full) == [("faceset_001", ("faceset_002",)),
                                                           ("faceset_004", ("faceset_005",))]
    assert all(g.max_pair <= t for g in full)
    # only 003 changed: its component (001-002-003) is closed and gives the same group; 004/005 are not looked at
    seeded = [g for c in seeded_components(vecs, [2], t + 1e-3) for g in linkage_groups([names[i] for i in c], vecs[c], t, set())]
    assert [(g.survivor, g.merged) for g in seeded] == [("faceset_001", ("faceset_002",))]
    # a restored pair stays apart: then 002 goes with 003
    apart = {("faceset_001", "faceset_002"), ("faceset_002", "faceset_001")}
    kept = [g for c in seeded_components(vecs, [2], t + 1e-3) for g in linkage_groups([names[i] for i in c], vecs[c], t, apart)]
    assert [(g.survivor, g.merged) for g in kept] == [("faceset_002", ("faceset_003",))]


@pytest.mark.slow
def test_the_daemon_merges_on_its_schedule_once_the_inbox_is_settled(
        tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    from daemon_proc import DaemonProcess

    data = tmp_path / "data"
    ids = faces_dir / "identities"
    drop(ids, data / "inbox", *OBAMA_A, into="faceset_001")
    drop(ids, data / "inbox", *OBAMA_B, into="faceset_002")
    d = DaemonProcess(data, {**env, "FACESETD_QUEUE_CLUSTER_INTERVAL_S": "1.0"}).start()
    d.wait_for(lambda: "facesets_merged" in d.kinds(), "the merge on the housekeeping schedule", timeout=90)
    d.wait_for(lambda: len(list((data / "corpus/faceset_001/faces").glob("*.png"))) == 4, "4 faces in faceset_001")
    assert d.terminate() == 0
    merges = [e for e in d.events() if e["kind"] == "facesets_merged"]
    assert [(e["faceset"], e["merged"]) for e in merges] == [("faceset_001", ["faceset_002"])]
    # every photo was routed (into its seed) before the merge: the inbox was settled
    processed = [e["position"] for e in d.events() if e["kind"] == "photo_processed"]
    assert len(processed) == 4 and max(processed) < merges[0]["position"]
    assert (data / "corpus/_merged/faceset_002/manifest.json").is_file()
