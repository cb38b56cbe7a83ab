"""The daemon polls Immich on its schedule and imports new faces; the key never reaches its logs. Whatever
Immich does (answers late or a byte at a time, sends malformed data or 500s, offers huge originals), the daemon
runs on, records why it refused what it refused, and stops at once on SIGTERM."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_proc import DaemonProcess

from daemon.immich.poller import format_ts
from tests.immich_fake import FakeAsset, FakeImmich, library

KEY = "fake-key-DaemonPoll-91xQ"


def obama(faces_dir: Path) -> list[Path]:
    return [p for p in sorted((faces_dir / "identities" / "obama").glob("*.jpg")) if p.stem != "obama_small"]


def daemon_env(tmp_path: Path, fake: FakeImmich, models_root: Path, immich: str = "", **settings: str) -> dict[str, str]:
    """The environment of a daemon polling `fake` as user alice ([immich] lines in `immich`)."""
    config = tmp_path / "facesetd.toml"
    config.write_text(
        f'[immich]\nurl = "{fake.url}"\n{immich}'
        '[[immich.users]]\nname = "alice"\napi_key_env = "IMMICH_KEY_ALICE"\n'
    )
    return {"IMMICH_KEY_ALICE": KEY, "FACESETD_CONFIG": str(config), "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
            "FACESETD_MODELS_ROOT": str(models_root), **settings}


@contextmanager
def running(d: DaemonProcess) -> Iterator[DaemonProcess]:
    """The daemon started, and killed at the end if a failed assertion left it running."""
    d.start()
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()


def of_kind(d: DaemonProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in d.events() if e["kind"] == kind]


def watermarks(d: DaemonProcess) -> list[str]:
    return [e["value"] for e in of_kind(d, "immich_watermark_advanced")]


def logged(d: DaemonProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in d.lines() if line.get("event") == event]


def test_the_daemon_imports_from_immich_on_schedule(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    photos = obama(faces_dir)
    with FakeImmich(api_key=KEY) as fake:
        library(fake, photos[:4])
        env = daemon_env(tmp_path, fake, models_root, 'interval_minutes = 0.02\ntimeout_s = 10.0\n',
                         FACESETD_IDENTITY_MIN_NEW_FACESET="5", FACESETD_QUEUE_CLUSTER_INTERVAL_S="1.0")
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


STOP_WITHIN_S = 10.0  # systemd's TimeoutStopSec is 30 s (systemd/facesetd.service)


def _by_update(fake: FakeImmich) -> list[FakeAsset]:
    return sorted(fake.assets.values(), key=lambda a: a.updated_at)


@pytest.mark.slow
@pytest.mark.parametrize(("op", "kind", "delay_s"), [("searchAssets", "timeout", 35.0),
                                                     ("downloadAsset", "trickle", 20.0)],
                         ids=["answers-after-35s", "one-byte-every-20s"])
def test_sigterm_stops_the_daemon_at_once_whatever_immich_does(tmp_path: Path, faces_dir: Path, models_root: Path,
                                                              op: str, kind: str, delay_s: float) -> None:
    """A poll is waiting on a slow Immich (the listing answers after 35 s; an original comes one byte every 20 s,
    the default 30 s timeout per read never trips): SIGTERM stops the daemon with exit 0 well within systemd's
    TimeoutStopSec. The cut-off poll's watermark stays before the asset it did not finish, and the next start
    imports that asset, each photo once."""
    with FakeImmich(api_key=KEY) as fake:
        library(fake, obama(faces_dir)[:3])
        stuck = _by_update(fake)[1]
        fake.inject(op, kind, times=1, asset_id=stuck.id if op == "downloadAsset" else None, delay_s=delay_s)
        env = daemon_env(tmp_path, fake, models_root, 'interval_minutes = 60\ntimeout_s = 30.0\n')
        d = DaemonProcess(tmp_path / "data", env)
        with running(d):
            d.wait_for(lambda: fake.counts[op] >= 1, f"the daemon waiting on {op}")
            if op == "downloadAsset":
                d.wait_for(lambda: len(of_kind(d, "immich_asset_imported")) == 2, "the other two imported")
            time.sleep(1.0)  # well into the slow answer
            t0 = time.monotonic()
            rc = d.terminate(timeout=30)
            took = time.monotonic() - t0
        assert rc == 0 and took < STOP_WITHIN_S, f"exit {rc} after {took:.1f} s"
        assert logged(d, "immich_poll_cancelled")
        assert all(w < format_ts(stuck.updated_at) for w in watermarks(d))  # not past what was not recorded
        assert stuck.id not in {e["asset_id"] for e in of_kind(d, "immich_asset_imported")}
        fake.injections.clear()  # Immich is quick again: the next start takes up where the stop left off
        with running(d):
            d.wait_for(lambda: len(of_kind(d, "immich_asset_imported")) == 3, "all three imported")
            d.wait_for(lambda: format_ts(_by_update(fake)[-1].updated_at) in watermarks(d), "the watermark at the end")
            assert d.terminate() == 0
        assert fake.validation_errors == []
    assert sorted(e["asset_id"] for e in of_kind(d, "immich_asset_imported")) == sorted(fake.assets)


@pytest.mark.slow
def test_malformed_answers_are_refused_with_their_reason_and_the_rest_imported(
        tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    """One face box of "x" and one listed item that is a list, not an asset object: before, a TypeError failed
    every poll and the watermark never moved. Now each is refused once (immich_asset_refused, with what was
    wrong), the other photos are imported, and the watermark reaches the last asset."""
    with FakeImmich(api_key=KEY) as fake:
        library(fake, obama(faces_dir)[:4])
        order = _by_update(fake)
        odd_box, odd_item = order[1], order[2]
        fake.inject("getFaces", "malformed", times=10_000, asset_id=odd_box.id,
                    mutate=lambda faces: [{**faces[0], "boundingBoxX1": "x"}])

        def item_as_list(body: dict[str, Any]) -> dict[str, Any]:
            body["assets"]["items"] = [[i] if i["id"] == odd_item.id else i for i in body["assets"]["items"]]
            return body

        fake.inject("searchAssets", "malformed", times=10_000, mutate=item_as_list)
        env = daemon_env(tmp_path, fake, models_root, 'interval_minutes = 0.01\n')
        d = DaemonProcess(tmp_path / "data", env)
        with running(d):
            last = format_ts(order[-1].updated_at)
            d.wait_for(lambda: last in watermarks(d), "the watermark past the malformed assets")
            d.wait_for(lambda: d.kinds().count("photo_processed") == 2, "the two others processed")
            searches = fake.counts["searchAssets"]
            d.wait_for(lambda: fake.counts["searchAssets"] >= searches + 3, "three more polls")
            assert d.terminate() == 0
        assert set(fake.malformed_served) == {"getFaces", "searchAssets"} and fake.validation_errors == []
    refused = of_kind(d, "immich_asset_refused")
    assert sorted((r["asset_id"], r["reason"], r["error"]) for r in refused) == sorted([
        (odd_box.id, "malformed", f"faces of asset {odd_box.id}, face 1: boundingBoxX1 is 'x', not a number"),
        ("", "malformed", "an asset is list, not an object"),
    ])  # once each, though polled again and again
    imported = {e["asset_id"] for e in of_kind(d, "immich_asset_imported")}
    assert imported == {order[0].id, order[3].id}
    assert len(logged(d, "immich_asset_refused")) == 2  # a warning when recorded, not at every poll
    assert not logged(d, "immich_polling_paused")


@pytest.mark.slow
def test_immich_500s_pause_polling_once_and_back_off(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    """/server/ping answers, the API returns 500: before, the breaker paused and resumed every cycle. Now it opens
    once, stays open through its trials with the wait doubling (asked of the server only at a trial), and
    resumes once when the API answers again."""
    with FakeImmich(api_key=KEY) as fake:
        library(fake, obama(faces_dir)[:2])
        fake.inject("searchAssets", "500", times=10_000)
        env = daemon_env(tmp_path, fake, models_root, 'interval_minutes = 0.01\nretries = 0\nbreaker_failures = 2\n',
                         FACESETD_LOGGING_LEVEL="debug")
        d = DaemonProcess(tmp_path / "data", env)
        with running(d):
            d.wait_for(lambda: len(logged(d, "immich_polling_still_paused")) >= 3, "three failed trials", timeout=60)
            # the third failed trial set a 4.8 s wait: nothing is asked meanwhile, so these counts hold still
            searches, pings, trials = fake.counts["searchAssets"], fake.counts["pingServer"], logged(
                d, "immich_polling_still_paused")
            fake.injections.clear()
            d.wait_for(lambda: logged(d, "immich_polling_resumed"), "polling resumed", timeout=60)
            d.wait_for(lambda: len(of_kind(d, "immich_asset_imported")) == 2, "the photos imported")
            assert d.terminate() == 0
        assert fake.validation_errors == []
    (paused,) = logged(d, "immich_polling_paused")
    assert paused["retry_in_s"] == 0.6 and "HTTP 500" in paused["reason"]
    assert [t["retry_in_s"] for t in trials] == [1.2, 2.4, 4.8]  # doubling (bounded by MAX_BACKOFF_S)
    assert searches == 2 + 3 and pings == 3  # two failed polls opened it; then one search per trial, no more
    assert len(logged(d, "immich_polling_resumed")) == 1 and len(logged(d, "immich_polling_paused")) == 1
    assert len(logged(d, "immich_poll_failed")) == 1  # the first failure; the breaker speaks for the rest


@pytest.mark.slow
def test_an_oversized_original_is_refused_and_not_downloaded_again(
        tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    """An original over [limits] max_file_bytes is refused by its Content-Length, recorded with its size, and
    never asked for again, though it sits at the watermark and is listed by every poll."""
    limit = 400_000
    with FakeImmich(api_key=KEY) as fake:
        library(fake, obama(faces_dir)[:3])
        huge = _by_update(fake)[-1]
        huge.trailer = bytes(limit)  # the photo and as much again: over the limit
        env = daemon_env(tmp_path, fake, models_root, 'interval_minutes = 0.01\n',
                         FACESETD_LIMITS_MAX_FILE_BYTES=str(limit))
        d = DaemonProcess(tmp_path / "data", env)
        with running(d):
            d.wait_for(lambda: of_kind(d, "immich_asset_refused"), "the original refused")
            d.wait_for(lambda: d.kinds().count("photo_processed") == 2, "the two others processed")
            searches = fake.counts["searchAssets"]
            d.wait_for(lambda: fake.counts["searchAssets"] >= searches + 3, "three more polls")
            assert d.terminate() == 0
        assert fake.validation_errors == []
    (refused,) = of_kind(d, "immich_asset_refused")
    size = len(huge.file.read_bytes()) + limit
    assert (refused["asset_id"], refused["reason"], refused["size"]) == (huge.id, "too_large", size)
    assert refused["error"] == f"the original is {size} bytes by its Content-Length, over the limit of {limit}"
    assert [aid for op, aid in fake.requests if op == "downloadAsset"].count(huge.id) == 1  # never again
    assert [aid for op, aid in fake.requests if op == "getFaces"].count(huge.id) == 1
    assert format_ts(huge.updated_at) in watermarks(d)
    assert huge.id not in {e["asset_id"] for e in of_kind(d, "immich_asset_imported")}
    data = tmp_path / "data"
    kept = [p for root in (data / "inbox", data / "state" / "immich_staging") for p in root.rglob("*") if p.is_file()]
    assert len(kept) == 2 and all(p.stat().st_size < limit for p in kept)  # the two photos; nothing of huge's kept
