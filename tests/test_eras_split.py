"""Era buckets made, not only filled: `facesetd eras split` on real dated photos, the real models and the real CLI.

The photos are copies of ../shared/faces with an EXIF DateTimeOriginal written by PIL (what era slotting reads
from the source photo). Same-person distances on these crops (buffalo_sc) are 0.08-0.35, all within the era
distance of 0.40, so the years decide the bucket here.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from helpers import cli, images, projections, rebuilt_from_log_alone
from helpers import log_events as events
from PIL import Image

from tests.handler_fixtures import GivenScorer, pipeline, png, write_corpus

SEED = {"obama.jpg": 2008, "obama1.jpg": 2009, "obama2.jpg": 2015, "obama_partial_face.jpg": None}


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


def dated(faces_dir: Path, name: str, year: int | None, into: Path) -> None:
    """A copy of identities/obama/NAME in `into`, with EXIF DateTimeOriginal in `year` (none: no EXIF)."""
    into.mkdir(parents=True, exist_ok=True)
    with Image.open(faces_dir / "identities/obama" / name) as im:
        buf = io.BytesIO()
        if year is None:
            im.save(buf, format="JPEG", quality=95)
        else:
            exif = Image.Exif()
            exif[0x8769] = {0x9003: f"{year}:06:01 12:00:00"}
            im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    (into / name).write_bytes(buf.getvalue())


def manifest(corpus: Path, folder: str) -> dict:
    return json.loads((corpus / folder / "manifest.json").read_text())


def fsz_members(corpus: Path, folder: str, name: str) -> list[bytes]:
    with zipfile.ZipFile(corpus / folder / f"{name}.fsz") as z:
        return sorted(z.read(n) for n in z.namelist())


def crop_of(corpus: Path, photo: str) -> str:
    """The corpus path of the crop cut from `photo` (by its manifest's source)."""
    (path,) = [f"faceset_001/faces/{f['file']}" for f in manifest(corpus, "faceset_001")["faces"]
               if f["source"]["received_as"].endswith("/" + photo)]
    return path


@pytest.mark.slow
def test_split_makes_buckets_a_new_dated_photo_slots_in_and_restore_unmakes_them(
    tmp_path: Path, faces_dir: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    inbox, corpus = data / "inbox", data / "corpus"
    for name, year in SEED.items():
        dated(faces_dir, name, year, inbox / "faceset_001")
    cli(data, "reconcile", env=env)
    assert len(manifest(corpus, "faceset_001")["faces"]) == 4
    before = {"images": images(corpus), "projections": projections(corpus), "events": len(events(data, env))}

    # a bucket needs [eras] min_split_anchors (2) anchors: 2015's one face stays in the family alone
    out = cli(data, "eras", "split", "faceset_001", "--dry-run", env=env).stdout
    assert "faceset_002  2008-2012  year 2008  2 anchor(s): " in out and "faceset_003" not in out
    assert "in no bucket, fewer than 2 dated faces in their window (they stay in faceset_001): " in out
    # no window holds 2 dated faces: refused in one line, nothing recorded
    refused = cli(data, "eras", "split", "faceset_001", "--years", "1", env=env, check=False)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert ("faceset_001: 3 of its 4 faces have a year, and no window of 1 year holds 2 of them (an era bucket needs"
            " at least 2 anchors: [eras] min_split_anchors); nothing split") in refused.stderr
    assert len(events(data, env)) == before["events"]

    # one anchor per bucket allowed: --dry-run prints the split and records nothing
    env = {**env, "FACESETD_ERAS_MIN_SPLIT_ANCHORS": "1"}
    out = cli(data, "eras", "split", "faceset_001", "--dry-run", env=env).stdout
    assert "faceset_002  2008-2012  year 2008  2 anchor(s): " in out
    assert "faceset_003  2013-2017  year 2015  1 anchor(s): " in out
    assert "in no bucket, no year: " in out and "dry run: nothing recorded" in out
    assert len(events(data, env)) == before["events"]
    assert projections(corpus) == before["projections"] and not (corpus / "faceset_002").exists()

    out = cli(data, "eras", "split", "faceset_001", env=env).stdout
    (split,) = [e for e in events(data, env) if e["kind"] == "eras_split"]
    assert f"recorded as event {split['id']}" in out
    early, late = split["payload"]["buckets"]
    assert (early["faceset"], early["year"], late["faceset"], late["year"]) == ("faceset_002", 2008, "faceset_003", 2015)
    anchors = {crop_of(corpus, n): n for n in SEED}
    assert {anchors[a[0]] for a in early["anchors"]} == {"obama.jpg", "obama1.jpg"}
    assert [anchors[a[0]] for a in late["anchors"]] == ["obama2.jpg"]
    # the anchors stay in the family's folder; each bucket's .fsz holds its own, read in place
    assert images(corpus) == before["images"]
    assert fsz_members(corpus, "faceset_002", "faceset_002") == sorted(
        (corpus / a[0]).read_bytes() for a in early["anchors"])
    eras = {f["file"]: f.get("era") for f in manifest(corpus, "faceset_001")["faces"]}
    assert sorted(eras.values(), key=str) == [None, "faceset_002", "faceset_002", "faceset_003"]
    master = json.loads((corpus / "manifest.json").read_text())
    assert [(b["faceset"], b["family"], b["year"], b["first_year"], b["last_year"], b["anchors"])
            for b in master["era_buckets"]] == [("faceset_002", "faceset_001", 2008, 2008, 2012, 2),
                                                ("faceset_003", "faceset_001", 2015, 2013, 2017, 1)]
    assert master["thin_eras"] == ["faceset_002", "faceset_003"]
    assert manifest(corpus, "faceset_003")["era"]["decision"] == split["id"]
    listed = [" ".join(line.split()) for line in cli(data, "eras", "list", env=env).stdout.splitlines()]
    assert listed == [
        f"faceset_002 of faceset_001 year 2008 2008-2012 2 anchors, 0 slotted thin (made by event {split['id']})",
        f"faceset_003 of faceset_001 year 2015 2013-2017 1 anchor, 0 slotted thin (made by event {split['id']})"]
    # a family is split once; a bucket is no family
    again = cli(data, "eras", "split", "faceset_001", env=env, check=False)
    assert again.returncode == 1 and f"`facesetd restore {split['id']}` unmakes them first" in again.stderr
    assert "is itself an era bucket" in cli(data, "eras", "split", "faceset_002", env=env, check=False).stderr

    # new dated photos of him, dropped plainly: routed to faceset_001, slotted by their years
    dated(faces_dir, "obama3.jpg", 2017, inbox)  # 9 years off the 2008 era, 2 off 2015
    dated(faces_dir, "obama_partial_face2.jpg", 2009, inbox)  # 6 years off 2015, 1 off 2008
    cli(data, "reconcile", env=env)
    slotted = {e["payload"]["path"]: e["payload"] for e in events(data, env) if e["kind"] == "face_slotted"}
    assert slotted[crop_of(corpus, "obama3.jpg")]["era"] == "faceset_003"
    assert slotted[crop_of(corpus, "obama_partial_face2.jpg")]["era"] == "faceset_002"
    assert slotted[crop_of(corpus, "obama3.jpg")]["inputs"]["buckets"]["faceset_002"]["years_off"] == 9
    assert len(fsz_members(corpus, "faceset_003", "faceset_003")) == 2
    assert (corpus / crop_of(corpus, "obama3.jpg")).read_bytes() in fsz_members(corpus, "faceset_003", "faceset_003")

    # the log alone gives the same bytes
    assert rebuilt_from_log_alone(data, tmp_path / "copy") == projections(corpus)

    # restore: every face leaves the buckets, whose folders go to _merged/; no PNG moves
    pngs = images(corpus)
    cli(data, "restore", str(split["id"]), env=env)
    assert images(corpus) == pngs
    assert not (corpus / "faceset_002").exists() and (corpus / "_merged/faceset_002/manifest.json").is_file()
    assert all("era" not in f for f in manifest(corpus, "faceset_001")["faces"])
    master = json.loads((corpus / "manifest.json").read_text())
    assert master["era_buckets"] == [] and master["thin_eras"] == []
    # the buckets' folders stay in _merged/, empty (they never held a PNG): not listed among the merged facesets
    assert master["merged"] == [] and (corpus / "_merged/faceset_003/manifest.json").is_file()
    assert "faceset_002" not in cli(data, "status", env=env).stdout
    assert "no era buckets" in cli(data, "eras", "list", env=env).stdout
    # split again: new numbers (never reused), and the five faces' years
    cli(data, "eras", "split", "faceset_001", "--years", "10", env=env)
    master = json.loads((corpus / "manifest.json").read_text())
    assert [(b["faceset"], b["first_year"], b["last_year"], b["anchors"]) for b in master["era_buckets"]] == [
        ("faceset_004", 2008, 2017, 5)]
    assert rebuilt_from_log_alone(data, tmp_path / "copy2") == projections(corpus)


def test_windows_start_at_the_oldest_year_and_a_bucket_is_the_median_of_its_anchors(
    tmp_path: Path, face_engine, crops
) -> None:
    from handlers.era_split import CannotSplit, plan_split

    corpus = tmp_path / "corpus"
    write_corpus(corpus, {
        "faceset_001/faces/a.png": png(crops["obama"], year=2008),
        "faceset_001/faces/b.png": png(crops["obama1"], year=2014),
        "faceset_001/faces/c.png": png(crops["obama2"], year=2013),
        "faceset_001/faces/d.png": png(crops["obama3"], year=2020),
        "faceset_001/faces/e.png": png(crops["biden"]),  # no year: in no bucket
        "faceset_007/faces/x.png": png(crops["alex1"]),  # numbers go past every faceset
        "faceset_009/faces/y.png": png(crops["lin"]),
    })
    p = pipeline(tmp_path, lambda: (face_engine, GivenScorer()))
    p.reconcile()
    plan = plan_split(p.ctx, "faceset_001", 5)
    assert [(b["faceset"], b["first_year"], b["last_year"], b["year"], [a[0].rsplit("/", 1)[1] for a in b["anchors"]])
            for b in plan.buckets] == [("faceset_010", 2013, 2017, 2013, ["b.png", "c.png"])]
    # 2008-2012 and 2018-2022 hold one dated face each: under [eras] min_split_anchors (2), they make no bucket
    assert plan.too_few == ["faceset_001/faces/a.png", "faceset_001/faces/d.png"]
    assert plan.undated == ["faceset_001/faces/e.png"]
    assert [len(b["anchors"]) for b in plan_split(p.ctx, "faceset_001", 20).buckets] == [4]

    with pytest.raises(CannotSplit, match="no faceset faceset_002"):
        plan_split(p.ctx, "faceset_002", 5)
    with pytest.raises(CannotSplit, match="no face with a year"):
        plan_split(p.ctx, "faceset_007", 5)
    family = {f.name: f.read_bytes() for f in (corpus / "faceset_001").iterdir() if f.is_file()}
    (position,) = p.log.append([plan.event()])
    p.settle()
    eras = {f["file"]: f.get("era") for f in json.loads((corpus / "faceset_001/manifest.json").read_text())["faces"]}
    assert eras == {"a.png": None, "b.png": "faceset_010", "c.png": "faceset_010", "d.png": None, "e.png": None}
    assert [b.faceset for b in p.state.made_era_buckets()] == ["faceset_010"]
    assert (corpus / "faceset_010/faces").is_dir()  # the bucket's folder, made by the renderer
    with pytest.raises(CannotSplit, match=f"restore {position}"):
        plan_split(p.ctx, "faceset_001", 5)
    p.restore(position)
    assert p.state.made_era_buckets() == [] and p.state.faceset_area("faceset_010") == "_merged"
    # the family's manifest and .fsz files are byte for byte what they were before the split
    assert {f.name: f.read_bytes() for f in (corpus / "faceset_001").iterdir() if f.is_file()} == family
    assert [b["faceset"] for b in plan_split(p.ctx, "faceset_001", 5).buckets] == ["faceset_011"]


def test_a_family_with_configured_buckets_is_not_split(tmp_path: Path) -> None:
    from tests.helpers import cli

    data = tmp_path / "data"
    write_corpus(data / "corpus", {"faceset_001/faces/a.png": b"not decoded here"})
    (data / "facesetd.toml").write_text(
        '[[eras.buckets]]\nfaceset = "faceset_101"\nfamily = "faceset_001"\nyear = 2010\n')
    cli(data, "reconcile")
    proc = cli(data, "eras", "split", "faceset_001", check=False)
    assert proc.returncode == 1 and "already has era buckets (faceset_101) (configured or adopted)" in proc.stderr
    proc = cli(data, "eras", "split", "faceset_001", "--years", "0", check=False)
    assert proc.returncode == 1 and "--years must be at least 1" in proc.stderr
    listed = " ".join(cli(data, "eras", "list").stdout.split())
    assert listed == "faceset_101 of faceset_001 year 2010 - 0 anchors, 0 slotted (configured)"


def test_split_waits_for_the_data_folder_lock_and_a_dry_run_takes_none(tmp_path: Path) -> None:
    import os

    from daemon.lock import DataLock
    from tests.helpers import cli

    data = tmp_path / "data"
    write_corpus(data / "corpus", {"faceset_001/faces/a.png": b"not decoded here"})
    cli(data, "reconcile")
    lock = DataLock(data / "state", data)
    lock.acquire("rebuild")
    try:
        proc = cli(data, "eras", "split", "faceset_001", "--wait", "0", check=False)
        assert proc.returncode == 1 and f"(pid {os.getpid()}, rebuild) is using {data}" in proc.stderr
        # the dry run reads only: it gets as far as the faceset (which has no dated face)
        proc = cli(data, "eras", "split", "faceset_001", "--dry-run", check=False)
        assert proc.returncode == 1 and "faceset_001 has no face with a year" in proc.stderr
    finally:
        lock.close()
