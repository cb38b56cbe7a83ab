"""Seeding a person through inbox/faceset_NNN/, with real photos, the real buffalo_sc models and the real CLI.

The pitfalls a newcomer meets: a photo of someone else dropped into an existing faceset (warned about, and
undoable with `facesetd restore`), and a photo seeded after it was already dropped into the inbox once (its
face waiting in the pool seeds the faceset).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess
from helpers import cli, drop, projections
from helpers import log_events as events
from invariants import manifest_entries_exist, photos_accounted_once, rebuild_identical, sha256_file
from test_crash import run_until_crash_point


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}






def of_kind(evs: list[dict], kind: str) -> list[dict]:
    return [e for e in evs if e["kind"] == kind]


def manifest(corpus: Path, faceset: str) -> dict:
    return json.loads((corpus / faceset / "manifest.json").read_text())


def fsz_count(corpus: Path, faceset: str) -> int:
    with zipfile.ZipFile(corpus / faceset / f"{faceset}.fsz") as z:
        return len(z.namelist())


def one_line_error(proc) -> str:
    """A user error: exit 1, no traceback, one line on stderr that is not a log line."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_stranger_forced_into_a_faceset_is_warned_about_and_can_be_taken_out(
    tmp_path: Path, faces_dir: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    inbox, corpus = data / "inbox", data / "corpus"
    ids = faces_dir / "identities"
    drop(ids, inbox, "biden/biden.jpg", "biden/biden2.jpg", into="faceset_001")
    cli(data, "reconcile", env=env)
    assert of_kind(events(data, env), "forced_face_distant") == []  # the seed itself: no centroid to be far from

    # obama dropped into biden's faceset: he joins (the user said so), with a warning event and log line
    drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
    proc = cli(data, "reconcile", env=env)
    evs = events(data, env)
    (far,) = of_kind(evs, "forced_face_distant")
    warning = far["payload"]
    assert warning["faceset"] == "faceset_001" and warning["photo"] == "inbox/faceset_001/obama.jpg"
    assert warning["distance"] > warning["match_distance"] == 0.5  # buffalo_sc's (PACK_IDENTITY)
    crop = warning["path"]
    assert crop.startswith("faceset_001/faces/") and (corpus / crop).is_file()
    logged = [json.loads(ln) for ln in proc.stderr.splitlines() if "forced face far from its faceset" in ln]
    assert len(logged) == 1 and logged[0]["level"] == "warning" and logged[0]["faceset"] == "faceset_001"
    assert "facesetd restore" in logged[0]["undo"] and logged[0]["crop"] == crop
    assert len(manifest(corpus, "faceset_001")["faces"]) == 3 and fsz_count(corpus, "faceset_001") == 3
    (routed,) = [e for e in of_kind(evs, "face_routed") if e["payload"]["path"] == crop]

    # undone by the warning's id: the crop leaves the faceset for its _dropped/, nothing is deleted
    out = cli(data, "restore", str(far["id"]), env=env)
    assert f"restored event {far['id']}" in out.stdout
    name = crop.rsplit("/", 1)[1]
    assert not (corpus / crop).exists() and (corpus / "faceset_001/faces/_dropped" / name).is_file()
    m = manifest(corpus, "faceset_001")
    assert [f["file"] for f in m["dropped"]] == [f"_dropped/{name}"]
    assert len(m["faces"]) == 2 and fsz_count(corpus, "faceset_001") == 2
    (undo,) = of_kind(events(data, env), "face_unrouted")
    assert undo["payload"]["target"] == far["id"] and undo["payload"]["check"] == "restored"
    assert m["dropped"][0]["pruned_by"] == undo["id"]
    # a user's correction is not a prune: the two biden photos left do not make the faceset thin
    assert (corpus / "faceset_001").is_dir() and not (corpus / "_thin").exists()

    # the same routing again (by the FaceRouted's id): one clear line, exit 1
    again = cli(data, "restore", str(routed["id"]), env=env, check=False)
    assert f"already taken out of faceset_001 by event {undo['id']}" in one_line_error(again)

    # and the correction itself can be undone, like a prune
    cli(data, "restore", str(undo["id"]), env=env)
    assert (corpus / crop).is_file() and len(manifest(corpus, "faceset_001")["faces"]) == 3

    # the projections are the log's; every photo is in one place, every manifest entry on disk
    before = projections(corpus)
    cli(data, "rebuild", env=env)
    assert projections(corpus) == before
    shas = [sha256_file(ids / p) for p in ("biden/biden.jpg", "biden/biden2.jpg", "obama/obama.jpg")]
    assert photos_accounted_once(data, shas) == [] and manifest_entries_exist(data) == []


def test_restoring_an_event_that_is_not_a_decision_names_what_can_be_restored(
    tmp_path: Path, faces_dir: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    drop(faces_dir / "identities", data / "inbox", "biden/biden.jpg", into="faceset_001")
    cli(data, "reconcile", env=env)
    (received,) = of_kind(events(data, env), "photo_received")
    proc = cli(data, "restore", str(received["id"]), env=env, check=False)
    assert "routed faces" in one_line_error(proc)


def test_a_photo_already_in_the_pool_seeds_a_faceset_when_dropped_again(
    tmp_path: Path, faces_dir: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    inbox, corpus = data / "inbox", data / "corpus"
    ids = faces_dir / "identities"
    # first dropped plainly: no faceset yet, so its face waits in the pool
    drop(ids, inbox, "obama/obama.jpg")
    cli(data, "reconcile", env=env)
    pooled = sorted(p.name for p in (corpus / "_pool").glob("*.png"))
    assert len(pooled) == 1

    # then the same bytes dropped to seed a person: the pooled face moves into the new faceset
    drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
    cli(data, "reconcile", env=env)
    evs = events(data, env)
    (seeded,) = of_kind(evs, "pool_faces_seeded")
    assert seeded["payload"]["faceset"] == "faceset_001"
    assert seeded["payload"]["moves"] == [[f"_pool/{pooled[0]}", f"faceset_001/faces/{pooled[0]}"]]
    assert [e["payload"]["faceset"] for e in of_kind(evs, "faceset_created")] == ["faceset_001"]
    assert list((corpus / "_pool").glob("*.png")) == []
    assert sorted(p.name for p in (corpus / "faceset_001/faces").glob("*.png")) == pooled
    assert [f["file"] for f in manifest(corpus, "faceset_001")["faces"]] == pooled
    assert (inbox / "_processed/faceset_001/obama.jpg").is_file() and not (inbox / "faceset_001/obama.jpg").exists()
    done = of_kind(evs, "photo_processed")[-1]["payload"]
    assert done["path"] == "faceset_001/obama.jpg" and [f["to"] for f in done["faces"]] == ["faceset_001"]

    # the seed works as one: the next obama photo is routed to it by distance
    drop(ids, inbox, "obama/obama1.jpg")
    cli(data, "reconcile", env=env)
    last = of_kind(events(data, env), "photo_processed")[-1]["payload"]
    assert last["path"] == "obama1.jpg" and [f["to"] for f in last["faces"]] == ["faceset_001"]

    # dropped a third time: nothing waits in the pool any more, nothing changes
    head = len(events(data, env))
    drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
    cli(data, "reconcile", env=env)
    evs = events(data, env)
    assert [e["kind"] for e in evs[head:]] == ["photo_received", "photo_processed"]
    before = projections(corpus)
    cli(data, "rebuild", env=env)
    assert projections(corpus) == before
    obama = sha256_file(ids / "obama/obama.jpg")
    assert photos_accounted_once(data, [obama] * 3 + [sha256_file(ids / "obama/obama1.jpg")]) == []
    assert manifest_entries_exist(data) == []


def test_the_running_daemon_seeds_from_the_pool_and_warns_about_a_stranger(
    tmp_path: Path, faces_dir: Path, env: dict[str, str]
) -> None:
    """The same two pitfalls through `facesetd run`, as a newcomer meets them: photos dropped into a live inbox."""
    data = tmp_path / "data"
    inbox, corpus = data / "inbox", data / "corpus"
    ids = faces_dir / "identities"
    d = DaemonProcess(data, env=env).start()
    try:
        def has(kind: str) -> bool:
            return kind in d.kinds()

        drop(ids, inbox, "obama/obama.jpg")
        d.wait_for(lambda: len(list((corpus / "_pool").glob("*.png"))) == 1 and has("photo_processed"), "pooled")
        drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
        d.wait_for(lambda: has("pool_faces_seeded"), "the seed from the pool")
        d.wait_for(lambda: len(list((corpus / "faceset_001/faces").glob("*.png"))) == 1, "the seeded crop")
        drop(ids, inbox, "biden/biden.jpg", into="faceset_001")
        d.wait_for(lambda: has("forced_face_distant"), "the warning")
        d.wait_for(lambda: "forced face far from its faceset" in d.output(), "the warning's log line")
        d.idle()
    finally:
        assert d.terminate() == 0
    (far,) = [e for e in d.events() if e["kind"] == "forced_face_distant"]
    assert far["faceset"] == "faceset_001" and far["photo"] == "inbox/faceset_001/biden.jpg"
    cli(data, "restore", str(far["position"]), env=env)
    assert not (corpus / far["path"]).exists()
    kept = [f["file"] for f in manifest(corpus, "faceset_001")["faces"]]
    assert len(kept) == 1 and kept[0].startswith(sha256_file(ids / "obama/obama.jpg")[:12])


def test_kill_while_seeding_from_the_pool_then_the_next_run_completes_it(
    tmp_path: Path, faces_dir: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 after the router moved the pooled crop into the faceset, before anything was recorded."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    inbox, corpus = data / "inbox", data / "corpus"
    ids = faces_dir / "identities"
    drop(ids, inbox, "obama/obama.jpg")
    cli(data, "reconcile", env=env)
    (pooled,) = sorted(p.name for p in (corpus / "_pool").glob("*.png"))
    drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
    run_until_crash_point(data, "dispatch:before_commit", args=("reconcile",))
    assert (corpus / "faceset_001/faces" / pooled).is_file()  # moved, not yet recorded
    cli(data, "reconcile", env=env)
    cli(data, "reconcile", env=env)
    evs = events(data, env)
    assert len(of_kind(evs, "pool_faces_seeded")) == 1 and list((corpus / "_pool").glob("*.png")) == []
    assert [f["file"] for f in manifest(corpus, "faceset_001")["faces"]] == [pooled]
    source = manifest(corpus, "faceset_001")["faces"][0]["source"]  # the first drop's photo, where it is now
    assert (source["photo"], source["received_as"]) == ("_processed/obama.jpg", "inbox/obama.jpg")
    assert photos_accounted_once(data, [sha256_file(ids / "obama/obama.jpg")] * 2) == []
    assert manifest_entries_exist(data) == [] and rebuild_identical(data, env) == []
