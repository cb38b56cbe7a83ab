"""Merging duplicate identities with real photos and the real buffalo_sc models, through the CLI a user runs:
two facesets seeded with different photos of one person merge into the older one, a faceset of someone else
stays, `reconcile --dry-run` shows the merge first, `restore` puts every file back byte for byte, and the
projections are the log's (a rebuild from the log alone gives the same bytes) after the merge and after its
restore."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import cli, drop, projections, rebuilt_from_log_alone
from helpers import log_events as events

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
    assert "merged 1 facesets" in out
    (merge,) = kinds_of(data, env, "facesets_merged")
    payload = merge["payload"]
    assert payload["faceset"] == "faceset_001" and payload["merged"] == ["faceset_003"]
    assert 0 < payload["inputs"]["max_pair_distance"] <= payload["inputs"]["merge_distance"] == 0.55
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

