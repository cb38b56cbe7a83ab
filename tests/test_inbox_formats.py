"""Photo formats, odd files and re-drops in the inbox (real photos, real buffalo_sc models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli
from PIL import Image


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


def _processed(evs: list[dict]) -> dict[str, dict]:
    return {e["payload"]["path"]: e["payload"] for e in evs if e["kind"] == "photo_processed"}


def test_formats_odd_files_and_redrops(tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    data = tmp_path / "data"
    inbox = data / "inbox"
    obama = faces_dir / "identities/obama"
    (inbox / "faceset_001").mkdir(parents=True)
    (inbox / "holiday").mkdir()
    shutil.copy(obama / "obama.jpg", inbox / "faceset_001/obama.jpg")
    Image.open(obama / "obama1.jpg").save(inbox / "o1.png")
    Image.open(obama / "obama2.jpg").save(inbox / "holiday/o2.webp")
    Image.open(obama / "obama3.jpg").save(inbox / "o3.heic", quality=80)
    (inbox / "empty.jpg").write_bytes(b"")
    (inbox / "notes.txt").write_text("not a photo")
    (inbox / "o1.png.part").write_bytes(b"still downloading")

    cli(data, "reconcile", env=env)
    evs = [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
    done = _processed(evs)
    for path in ("o1.png", "holiday/o2.webp", "o3.heic"):
        assert [f["to"] for f in done[path]["faces"]] == ["faceset_001"], path
    assert done["holiday/o2.webp"]["dest"] == "_processed/holiday/o2.webp"
    rejected = {e["payload"]["path"]: e["payload"] for e in evs if e["kind"] == "photo_rejected"}
    assert set(rejected) == {"empty.jpg", "notes.txt"}
    assert (inbox / "_rejected/unreadable/notes.txt").read_text() == "not a photo"
    assert (inbox / "o1.png.part").exists()  # partial downloads wait
    assert len(list((data / "corpus/faceset_001/faces").glob("*.png"))) == 4

    # The same bytes dropped again: processed, nothing new; another photo under a taken name: a free name.
    shutil.copy(obama / "obama.jpg", inbox / "obama_again.jpg")
    (inbox / "faceset_001").mkdir(exist_ok=True)
    shutil.copy(obama / "obama_small.jpg", inbox / "faceset_001/obama.jpg")
    cli(data, "reconcile", env=env)
    evs = [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
    again = [e["payload"] for e in evs if e["kind"] == "photo_processed"]
    redrop = next(p for p in again if p["path"] == "obama_again.jpg")
    assert redrop["faces"] == [] and "already processed" in redrop["note"]
    renamed = [p for p in again if p["path"] == "faceset_001/obama.jpg"]
    assert [p["dest"] for p in renamed] == ["_processed/faceset_001/obama.jpg", "_processed/faceset_001/obama_1.jpg"]
    # the fifth crop arrived; the checks may then prune it (obama_small is a smaller copy of obama.jpg)
    # and quarantine the faceset as thin, so count it wherever the checks put it
    crops = [p for p in (data / "corpus").rglob("*.png") if "faceset_001" in p.parts]
    assert len(crops) == 5
