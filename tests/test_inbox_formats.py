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


# Orientation 6: the pixels are stored turned a quarter to the left, and shown turned back to the right (a phone
# held upright). Every format must come out upright; AVIF came out sideways (OpenCV ignores its rotation).
ORIENTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF")


def _turned(photo: Path, fmt: str) -> bytes:
    """`photo` saved as `fmt` the way a phone held upright saves it: stored sideways, EXIF orientation 6."""
    import io

    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    lossy = {"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF", "HEIF") else {}
    Image.open(photo).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(out, fmt, exif=exif.tobytes(), **lossy)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ORIENTED_FORMATS)
def test_a_photo_with_orientation_6_decodes_upright_in_every_format(faces_dir: Path, fmt: str) -> None:
    import numpy as np

    from gpu_agent.crop import decode_image

    photo = faces_dir / "identities/obama/obama.jpg"
    upright = decode_image(photo.read_bytes()).astype(int)
    got = decode_image(_turned(photo, fmt)).astype(int)
    assert got.shape == upright.shape, f"{fmt} decoded {got.shape[1]}x{got.shape[0]}, not upright"
    assert np.abs(got - upright).mean() < 4, fmt  # the same picture, up to the lossy codecs' error


def test_an_avif_with_orientation_6_gives_the_crop_of_the_same_jpeg(tmp_path: Path, faces_dir: Path,
                                                                     env: dict[str, str]) -> None:
    import numpy as np

    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    photo = faces_dir / "identities/obama/obama.jpg"
    for fmt, name in (("JPEG", "phone.jpg"), ("AVIF", "phone.avif")):
        (data / "inbox" / name).write_bytes(_turned(photo, fmt))

    cli(data, "reconcile", env=env)
    evs = [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
    done = _processed(evs)
    crops = {}
    for name in ("phone.jpg", "phone.avif"):
        faces = done[name]["faces"]
        assert len(faces) == 1, (name, faces)  # the face is found: upright, the detector finds it
        crop = next((data / "corpus").rglob(Path(faces[0]["crop"]).name))  # in the pool, or aside as a near-duplicate
        crops[name] = np.asarray(Image.open(crop).convert("L"), dtype=float)
    jpeg, avif = crops["phone.jpg"], crops["phone.avif"]
    same = np.abs(avif - jpeg).mean()
    assert same < 6, same  # the same upright crop, up to AVIF's loss
    assert np.abs(np.rot90(avif) - jpeg).mean() > 4 * same  # a sideways crop would be far from it
