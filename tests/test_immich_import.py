"""End to end: `facesetd immich poll --once` against the fake Immich (a real HTTP server validated with
openapi-core), through the event-log store and the inbox pipeline, into facesets."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import cli

from tests.immich_fake import FakeImmich, library

KEY = "fake-key-ImportEndToEnd-7Hq2"


def test_full_import_into_facesets_then_nothing_new(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    # obama_small.jpg's face is under the 90 px gate even in original pixels: the poller skips it
    photos = [p for p in sorted((faces_dir / "identities" / "obama").glob("*.jpg")) if p.stem != "obama_small"]
    photos += sorted((faces_dir / "identities" / "biden").glob("*.jpg"))
    data = tmp_path / "data"
    config = tmp_path / "facesetd.toml"
    with FakeImmich(api_key=KEY) as fake:
        library(fake, photos)
        config.write_text(
            f'[immich]\nurl = "{fake.url}"\ntimeout_s = 10.0\n'
            '[[immich.users]]\nname = "alice"\napi_key_env = "IMMICH_KEY_ALICE"\n'
        )
        env = {"IMMICH_KEY_ALICE": KEY, "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
               "FACESETD_MODELS_ROOT": str(models_root), "FACESETD_IDENTITY_MIN_NEW_FACESET": "4"}
        first = cli(data, "--config", str(config), "immich", "poll", "--once", env=env)
        second = cli(data, "--config", str(config), "immich", "poll", "--once", env=env)
        assert fake.validation_errors == []
    for proc in (first, second):
        assert KEY not in proc.stdout + proc.stderr
    assert f"listed {len(photos)}; delivered {len(photos)}" in first.stdout
    assert "delivered" not in second.stdout.split("user alice:")[1]
    # obama's photos became a new faceset (past the refine gate), each face with its Immich provenance
    manifest = json.loads((data / "corpus" / "faceset_001" / "manifest.json").read_text())
    sources = [f["source"] for f in manifest["faces"]]
    assert len(sources) >= 4
    assert all(s["immich"]["user"] == "alice" and s["immich"]["asset_id"] for s in sources)
    assert all(s.get("taken_at") for s in sources)
    originals = {f.name for f in (data / "inbox" / "_processed").rglob("*.jpg")}
    assert len(originals) == len(photos)
    events = [json.loads(line) for line in cli(data, "events", "--json", env=env).stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds.count("immich_asset_imported") == len(photos)
    assert kinds.count("photo_received") == len(photos)
    assert "immich_watermark_advanced" in kinds
    assert KEY not in json.dumps(events)
