"""The daemon polls Immich on its schedule and imports new faces; the key never reaches its logs."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

from daemon_proc import DaemonProcess

from tests.immich_fake import FakeImmich, library

KEY = "fake-key-DaemonPoll-91xQ"


def test_the_daemon_imports_from_immich_on_schedule(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    photos = [p for p in sorted((faces_dir / "identities" / "obama").glob("*.jpg")) if p.stem != "obama_small"]
    config = tmp_path / "facesetd.toml"
    with FakeImmich(api_key=KEY) as fake:
        library(fake, photos[:4])
        config.write_text(
            f'[immich]\nurl = "{fake.url}"\ninterval_minutes = 0.02\ntimeout_s = 10.0\n'
            '[[immich.users]]\nname = "alice"\napi_key_env = "IMMICH_KEY_ALICE"\n'
        )
        env = {"IMMICH_KEY_ALICE": KEY, "FACESETD_CONFIG": str(config), "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
               "FACESETD_MODELS_ROOT": str(models_root), "FACESETD_IDENTITY_MIN_NEW_FACESET": "5",
               "FACESETD_QUEUE_CLUSTER_INTERVAL_S": "1.0"}
        d = DaemonProcess(tmp_path / "data", env).start()
        d.wait_for(lambda: d.kinds().count("photo_processed") == 4, "the first four imported")
        time.sleep(1.5)
        assert not (tmp_path / "data" / "corpus" / "faceset_001").exists()  # 4 faces: below the gate
        # new photos in the library are picked up by a later scheduled poll, past the watermark
        library(fake, photos[4:], start=max(a.updated_at for a in fake.assets.values()) + timedelta(minutes=1))
        d.wait_for(lambda: d.kinds().count("photo_processed") == len(photos), "the later photos imported")
        manifest = tmp_path / "data" / "corpus" / "faceset_001" / "manifest.json"
        d.wait_for(manifest.exists, "the pool promoted into faceset_001", timeout=60)
        assert d.terminate() == 0
        assert fake.validation_errors == []
    faces = json.loads(manifest.read_text())["faces"]
    assert len(faces) >= 5 and all(f["source"]["immich"]["user"] == "alice" for f in faces)
    assert d.kinds().count("immich_asset_imported") == len(photos)
    assert KEY not in d.output()
