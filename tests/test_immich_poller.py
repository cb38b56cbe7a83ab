"""poll_user against the fake Immich server: imports, paging, failures, hostile names, the 90 px rule."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog

from daemon.immich.client import (
    ImmichAuthError,
    ImmichCancelled,
    ImmichClient,
    ImmichMalformed,
    ImmichPermissionError,
    ImmichUnavailable,
)
from daemon.immich.poller import DEFER_GIVE_UP, format_ts, poll_user, scale_faces
from daemon.immich.shapes import Face
from daemon.logs import configure_logging
from handlers.thresholds import IdentityThresholds
from tests.immich_fake import FakeAsset, FakeImmich, big_face, library, photo_size
from tests.immich_memory_store import MemoryImportStore

KEY = "fake-key-Zq8w3LmP0xY"
# Face sizes (short side, original pixels) as ../shared/faces/README.md lists them for the photos
# under the 90 px rule; every other photo gets big_face (a third of its short side, >= 113 px).
SMALL = {"pp12.jpg": 40, "pp3.jpg": 31, "pp6.jpg": 50, "pp5_on_screen.jpg": 81, "obama_small.jpg": 70}


@pytest.fixture
def photos(faces_dir: Path) -> list[Path]:
    return sorted((faces_dir / "identities").glob("*/*.jpg"))


def face_for(p: Path) -> tuple[int, int, int, int]:
    w, h = photo_size(p)
    if p.name in SMALL:
        s = SMALL[p.name]
        return (w // 2 - s // 2, h // 3, w // 2 - s // 2 + s, h // 3 + s)
    return big_face(w, h)


@pytest.fixture
def fake(photos: list[Path]):
    with FakeImmich(api_key=KEY) as f:
        for a in library(f, photos):
            a.faces = [face_for(a.file)]
        yield f
    assert f.validation_errors == []


def client(fake: FakeImmich, **kw) -> ImmichClient:
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("retries", 2)
    kw.setdefault("backoff_s", 0.01)
    return ImmichClient(fake.url, KEY, **kw)


def poll(fake: FakeImmich, store: MemoryImportStore, staging: Path, **kw):
    c = kw.pop("client", None) or client(fake)
    kw.setdefault("page_size", 5)
    kw.setdefault("workers", 4)
    kw.setdefault("min_face_px", IdentityThresholds().min_face_px)
    return poll_user(c, store, staging, "alice", **kw)


def big(fake: FakeImmich) -> set[str]:
    return {a.id for a in fake.assets.values() if a.file.name not in SMALL and not a.deleted}


def delivered_ids(store: MemoryImportStore) -> list[str]:
    return [d.asset_id for d in store.delivered]


def max_updated(fake: FakeImmich) -> str:
    return format_ts(max(a.updated_at for a in fake.assets.values() if not a.deleted))


def test_full_import_then_nothing(fake: FakeImmich, tmp_path: Path) -> None:
    store, staging = MemoryImportStore(), tmp_path / "staging"
    r = poll(fake, store, staging)
    assert r.listed == len(fake.assets) == 19
    assert sorted(delivered_ids(store)) == sorted(big(fake)) and r.delivered == 14
    assert r.counts["small_faces"] == 5
    assert store.watermark(fake.url, "alice") == max_updated(fake)
    for d in store.delivered:
        a = fake.assets[d.asset_id]
        assert d.path.is_file() and staging.resolve() in d.path.resolve().parents
        assert d.sha256 == hashlib.sha256(d.path.read_bytes()).hexdigest() == hashlib.sha256(a.file.read_bytes()).hexdigest()
        assert (d.server, d.user, d.original_file_name) == (fake.url, "alice", a.file.name)
        assert d.taken_at == format_ts(a.taken_at)
        # boxes come back in ORIGINAL pixels (within the preview's rounding, 640 px long side)
        (box,) = d.faces
        tol = max(a.width, a.height) / 640 + 1
        assert all(abs(got - want) <= tol for got, want in zip(box, a.faces[0])), (box, a.faces[0])
    assert not list((staging / ".partial").iterdir())
    downloads = fake.counts["downloadAsset"]

    r2 = poll(fake, store, staging)
    assert r2.delivered == 0 and len(store.delivered) == 14
    # only the asset(s) at the watermark itself are seen again (updatedAfter is inclusive), and it was
    # imported with the checksum the server still reports: nothing is downloaded again
    assert r2.listed == 1 and fake.counts["downloadAsset"] == downloads


def test_paging_with_repeats_removals_and_shared_timestamps(fake: FakeImmich, tmp_path: Path) -> None:
    same = datetime(2019, 1, 1, tzinfo=timezone.utc)
    for a in list(fake.assets.values())[:6]:
        a.taken_at = same  # a run of equal fileCreatedAt longer than a page
    order = sorted(fake.assets.values(), key=lambda a: (a.taken_at, a.id))
    victim = order[-2]  # not yet listed when page 1 is served

    def mutate(page: int) -> None:
        if not victim.deleted and fake.counts["searchAssets"] == 2:
            victim.deleted = True  # leaves the window mid-walk: offset paging would now skip an asset

    fake.on_search = mutate
    store = MemoryImportStore()
    r = poll(fake, store, tmp_path / "staging", page_size=3)
    listed_ids = [aid for op, aid in fake.requests if op == "getFaces"]
    assert fake.counts["searchAssets"] >= 7
    assert len(listed_ids) == len(set(listed_ids))  # repeats across page boundaries were de-duplicated
    assert sorted(delivered_ids(store)) == sorted(big(fake)) and r.listed == 18


def test_auth_errors_abort_cleanly(fake: FakeImmich, tmp_path: Path) -> None:
    store = MemoryImportStore()
    fake.inject("searchAssets", "401")
    with pytest.raises(ImmichAuthError, match="refused the API key"):
        poll(fake, store, tmp_path)
    fake.permissions = ["asset.read", "face.read"]
    with pytest.raises(ImmichPermissionError, match="asset.download"):
        poll(fake, store, tmp_path)
    assert store.watermark(fake.url, "alice") is None and store.delivered == []
    fake.permissions = ["all"]
    assert poll(fake, store, tmp_path).delivered == 14


@pytest.mark.parametrize("kind", ["500", "timeout"])
def test_outage_mid_run_loses_and_skips_nothing(fake: FakeImmich, tmp_path: Path, kind: str) -> None:
    order = sorted((a for a in fake.assets.values() if a.id in big(fake)), key=lambda a: a.updated_at)
    stuck = order[7]
    fake.inject("downloadAsset", kind, times=3, asset_id=stuck.id, delay_s=1.2)  # outlasts 2 retries
    store = MemoryImportStore()
    c = client(fake, timeout_s=0.5)
    with pytest.raises(ImmichUnavailable) as e:
        poll(fake, store, tmp_path, client=c, workers=1)
    mark = store.watermark(fake.url, "alice")
    assert mark is not None and mark < format_ts(stuck.updated_at)
    assert stuck.id not in delivered_ids(store)
    assert e.value.result.counts.get("not_tried", 0) > 0  # the pass stopped at the outage
    r = poll(fake, store, tmp_path, client=c)
    assert sorted(delivered_ids(store)) == sorted(big(fake))  # each exactly once
    assert store.watermark(fake.url, "alice") == max_updated(fake)
    assert r.failure is None


def test_outage_while_listing_moves_nothing(fake: FakeImmich, tmp_path: Path) -> None:
    def fail_later_pages(page: int) -> None:
        if fake.counts["searchAssets"] == 1:
            fake.inject("searchAssets", "500", times=3)  # page 2 onwards, past the retries

    fake.on_search = fail_later_pages
    store = MemoryImportStore()
    with pytest.raises(ImmichUnavailable):
        poll(fake, store, tmp_path)
    assert store.watermark(fake.url, "alice") is None and store.delivered == []
    fake.on_search = None
    poll(fake, store, tmp_path)
    assert sorted(delivered_ids(store)) == sorted(big(fake))


def test_asset_deleted_between_listing_and_download(fake: FakeImmich, tmp_path: Path) -> None:
    gone = sorted(fake.assets.values(), key=lambda a: a.updated_at)[2]
    fake.inject("getFaces", "delete", asset_id=gone.id)
    store = MemoryImportStore()
    r = poll(fake, store, tmp_path)
    assert r.counts["deleted"] == 1 and gone.id not in delivered_ids(store)
    assert sorted(delivered_ids(store)) == sorted(big(fake) - {gone.id})
    assert store.watermark(fake.url, "alice") == max_updated(fake)  # a gone asset does not block it


def test_hostile_file_names_stay_in_staging(fake: FakeImmich, tmp_path: Path) -> None:
    hostile = ["../../x.jpg", "..\\..\\evil.jpg", "/etc/passwd", "..", "a/../../../b.jpg", "\x00nul.jpg", "é" * 300 + ".jpg"]
    assets = [a for a in fake.assets.values() if a.id in big(fake)]
    for a, name in zip(assets, hostile):
        a.original_file_name = name
    staging = tmp_path / "inner" / "staging"
    store = MemoryImportStore()
    poll(fake, store, staging)
    assert len(store.delivered) == 14
    for d in store.delivered:
        assert staging.resolve() in d.path.resolve().parents
        assert d.path.name.startswith(d.sha256[:12] + "_") and len(d.path.name) <= 120
    assert {d.original_file_name for d in store.delivered} >= set(hostile)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and staging.resolve() not in p.resolve().parents]
    assert outside == []


def test_90px_rule_is_in_original_pixels(faces_dir: Path, tmp_path: Path) -> None:
    p = faces_dir / "identities" / "obama" / "obama1.jpg"  # 1280x720; the preview is 640x360 (half)
    now = datetime.now(timezone.utc)
    with FakeImmich(api_key=KEY) as f:
        kept = f.add(FakeAsset(p, 1280, 720, [(100, 100, 200, 196)], now - timedelta(hours=1), now))  # 96 px
        dropped = f.add(FakeAsset(p, 1280, 720, [(300, 100, 388, 300)], now - timedelta(hours=1), now))  # 88 px
        assert f.faces_json(kept)[0]["boundingBoxY2"] - f.faces_json(kept)[0]["boundingBoxY1"] == 48  # < 90 in the preview
        store = MemoryImportStore()
        r = poll(f, store, tmp_path)
    assert f.validation_errors == []
    assert delivered_ids(store) == [kept.id] and r.counts["small_faces"] == 1
    assert store.delivered[0].faces == ((100.0, 100.0, 200.0, 196.0),)
    assert dropped.id not in delivered_ids(store)
    assert scale_faces([Face(0, 0, 45, 45, 640, 360)], 1280, 720, 90) == ((0, 0, 90, 90),)


def test_unknown_size_is_measured_from_the_original(fake: FakeImmich, tmp_path: Path) -> None:
    for a in fake.assets.values():
        a.size_unknown = True
    store = MemoryImportStore()
    r = poll(fake, store, tmp_path)
    assert sorted(delivered_ids(store)) == sorted(big(fake)) and r.counts["small_faces"] == 5


def test_faces_not_detected_yet_are_deferred_and_rechecked(fake: FakeImmich, tmp_path: Path) -> None:
    later = [a for a in fake.assets.values() if a.id in big(fake)][:2]
    saved = {a.id: a.faces for a in later}
    for a in later:
        a.faces = []
    old = next(a for a in fake.assets.values() if a.id in big(fake) and a not in later)
    old.faces, old.created_at = [], datetime.now(timezone.utc) - DEFER_GIVE_UP - timedelta(days=1)
    store = MemoryImportStore()
    r = poll(fake, store, tmp_path)
    assert r.counts["deferred"] == 2 and r.counts["no_faces"] == 1
    assert store.deferred(fake.url, "alice") == set(saved)
    assert store.watermark(fake.url, "alice") == max_updated(fake)  # deferral does not hold it back
    for a in later:
        a.faces = saved[a.id]  # Immich ran detection; updatedAt does not change
    r2 = poll(fake, store, tmp_path)
    assert r2.delivered == 2 and set(saved) <= set(delivered_ids(store))
    assert store.deferred(fake.url, "alice") == set()


def test_logs_never_contain_the_key(fake: FakeImmich, tmp_path: Path, caplog) -> None:
    """The key is NOT registered for redaction here: nothing may log it in the first place."""
    buf = io.StringIO()
    configure_logging("debug", "json", stream=buf)
    caplog.set_level(logging.DEBUG)
    try:
        fake.inject("getFaces", "500", times=2)
        fake.inject("downloadAsset", "timeout", times=1, delay_s=1.2)
        store = MemoryImportStore()
        errors = []
        c = client(fake, timeout_s=0.5)
        poll(fake, store, tmp_path, client=c)
        fake.inject("searchAssets", "401")
        fake.inject("*", "500", times=50)
        for _ in range(2):
            try:
                poll(fake, store, tmp_path, client=c)
            except Exception as e:  # noqa: BLE001 - we want every message
                errors.append(f"{e!r} {e}")
    finally:
        structlog.reset_defaults()
    text = buf.getvalue() + caplog.text + " ".join(errors) + json.dumps([repr(d) for d in store.delivered])
    assert "immich_retry" in text and "immich_poll" in text and len(errors) == 2
    assert KEY not in text


def _last(fake: FakeImmich) -> FakeAsset:
    return max((a for a in fake.assets.values() if not a.deleted), key=lambda a: a.updated_at)


def test_the_asset_at_the_watermark_is_not_downloaded_again(fake: FakeImmich, tmp_path: Path) -> None:
    """Through the daemon's own store (the event log, reopened as a new process would): the asset at the
    watermark keeps its checksum, so later passes download nothing; new bytes under the same asset id
    (edited in Immich) are downloaded and delivered once."""
    from daemon.immich.store import EventLogImportStore
    from state.corpus_state import CorpusState
    from state.eventlog import EventLog

    staging, db = tmp_path / "staging", tmp_path / "events.sqlite3"
    handed: list[str] = []
    last = _last(fake)
    last.faces = [big_face(last.width, last.height)]  # the asset at the watermark is one that is imported

    def open_store() -> EventLogImportStore:
        log = EventLog(db)
        CorpusState(log)  # the tables the daemon's store reads beside the log
        return EventLogImportStore(log, lambda asset: handed.append(asset.asset_id) or [])

    first = poll(fake, open_store(), staging)
    assert first.delivered == 15 and last.id in handed
    downloads = fake.counts["downloadAsset"]
    for _ in range(2):
        again = poll(fake, open_store(), staging)
        assert again.listed == 1 and again.delivered == 0 and again.counts == {"unchanged": 1}
    assert fake.counts["downloadAsset"] == downloads
    # Immich's checksum changes with the bytes: the asset is fetched again and its new bytes delivered
    last.trailer = b"edited in immich"
    changed = poll(fake, open_store(), staging)
    assert changed.delivered == 1 and fake.counts["downloadAsset"] == downloads + 1
    assert handed.count(last.id) == 2 and len(handed) == 16
    assert poll(fake, open_store(), staging).counts == {"unchanged": 1}
    assert fake.counts["downloadAsset"] == downloads + 1


# Malformed answers, originals over the size limit, a pass cut off by a stop ----------------------------------

def _by_update(fake: FakeImmich) -> list[FakeAsset]:
    return sorted((a for a in fake.assets.values() if a.id in big(fake)), key=lambda a: a.updated_at)


def test_a_malformed_face_or_asset_is_refused_and_the_rest_imported(fake: FakeImmich, tmp_path: Path) -> None:
    """One face box of "x", a faces answer that is an object, a listed item that is a list: each refused with
    its reason (once, however often it is listed again), the other assets imported, the watermark at the end."""
    order = _by_update(fake)
    odd_box, odd_body, odd_item = order[2], order[5], order[8]
    fake.inject("getFaces", "malformed", times=100, asset_id=odd_box.id,
                mutate=lambda faces: [{**faces[0], "boundingBoxX1": "x"}])
    fake.inject("getFaces", "malformed", times=100, asset_id=odd_body.id, mutate=lambda faces: {"items": faces})

    def item_as_list(body: dict) -> dict:
        items = body["assets"]["items"]
        body["assets"]["items"] = [[i] if i["id"] == odd_item.id else i for i in items]
        return body

    fake.inject("searchAssets", "malformed", times=1000, mutate=item_as_list)
    store = MemoryImportStore()
    r = poll(fake, store, tmp_path)
    assert r.counts["malformed"] == 3 and r.delivered == 11
    assert sorted(delivered_ids(store)) == sorted(big(fake) - {odd_box.id, odd_body.id, odd_item.id})
    assert store.watermark(fake.url, "alice") == max_updated(fake)  # they hold nothing back
    refused = {(x.asset_id, x.reason, x.error) for x in store.refused}
    assert refused == {
        (odd_box.id, "malformed", f"faces of asset {odd_box.id}, face 1: boundingBoxX1 is 'x', not a number"),
        (odd_body.id, "malformed", f"faces of asset {odd_body.id}: the answer is dict, not a list"),
        ("", "malformed", "an asset is list, not an object"),
    }
    fake.counts.clear()
    for a in (odd_box, odd_body, odd_item):  # listed again (updated in Immich): still odd, still one refusal each
        a.updated_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    again = poll(fake, store, tmp_path)
    assert again.counts["malformed"] == 3 and len(store.refused) == 3 and fake.counts["downloadAsset"] == 0


def test_a_listing_page_that_is_not_one_fails_the_pass_and_moves_nothing(fake: FakeImmich, tmp_path: Path) -> None:
    fake.inject("searchAssets", "malformed", mutate=lambda body: [body])
    store = MemoryImportStore()
    with pytest.raises(ImmichMalformed, match="not an object with an `assets` object"):
        poll(fake, store, tmp_path)
    assert store.watermark(fake.url, "alice") is None and store.delivered == [] and store.refused == []


def test_an_original_over_the_limit_is_refused_once_and_never_downloaded_again(fake: FakeImmich, tmp_path: Path) -> None:
    """By its Content-Length, and (a deferred asset looked at again) by the fileSize its asset answer gives:
    refused with the size, the rest imported; later passes ask nothing more about it while its checksum holds."""
    huge, late = _last(fake), _by_update(fake)[4]  # the last: listed again at the watermark every pass
    huge.faces = [big_face(huge.width, huge.height)]
    huge.trailer = bytes(600_000)
    saved, late.faces = late.faces, []  # no faces yet: deferred, then looked at again by GET /assets/{id}
    late.trailer = bytes(700_000)
    limit = 500_000
    store = MemoryImportStore()
    r = poll(fake, store, tmp_path, max_file_bytes=limit)
    assert r.counts["too_large"] == 1 and r.counts["deferred"] == 1
    assert sorted(delivered_ids(store)) == sorted(big(fake) - {huge.id, late.id})
    (refusal,) = store.refused
    size = len(huge.file.read_bytes()) + 600_000
    assert (refusal.asset_id, refusal.reason, refusal.size) == (huge.id, "too_large", size)
    assert refusal.error == f"the original is {size} bytes by its Content-Length, over the limit of {limit}"
    assert store.watermark(fake.url, "alice") == max_updated(fake)
    late.faces = saved
    before = dict(fake.counts)
    r2 = poll(fake, store, tmp_path, max_file_bytes=limit)
    assert r2.counts == {"refused_before": 1, "too_large": 1}  # huge at the watermark; late by its fileSize
    assert fake.counts["getAssetInfo"] == before.get("getAssetInfo", 0) + 1
    assert fake.counts["getFaces"] == before["getFaces"] and fake.counts["downloadAsset"] == before["downloadAsset"]
    assert [x.error for x in store.refused][1] == f"the original is {len(late.file.read_bytes()) + 700_000} bytes " \
        f"by its exifInfo.fileSizeInByte, over the limit of {limit}"
    assert store.deferred(fake.url, "alice") == set()
    downloads = fake.counts["downloadAsset"]
    assert poll(fake, store, tmp_path, max_file_bytes=limit).counts == {"refused_before": 1}
    assert fake.counts["downloadAsset"] == downloads and len(store.refused) == 2
    huge.trailer = bytes(10)  # replaced in Immich by a smaller original: a new checksum, taken
    assert poll(fake, store, tmp_path, max_file_bytes=limit).delivered == 1 and huge.id in delivered_ids(store)


def test_a_cancelled_pass_moves_the_watermark_over_what_it_recorded_only(fake: FakeImmich, tmp_path: Path) -> None:
    order = _by_update(fake)
    stuck = order[6]
    fake.inject("downloadAsset", "trickle", asset_id=stuck.id, delay_s=20)  # one byte every 20 s
    store = MemoryImportStore()
    c = client(fake, timeout_s=60)
    threading.Thread(target=lambda: (_wait_for(lambda: fake.counts["downloadAsset"] >= 7), c.cancel.set()),
                     daemon=True).start()
    with pytest.raises(ImmichCancelled) as e:
        poll(fake, store, tmp_path, client=c, workers=1)
    assert e.value.result.counts.get("cancelled") == 1 and e.value.result.counts.get("not_tried", 0) > 0
    mark = store.watermark(fake.url, "alice")
    assert mark == format_ts(order[5].updated_at) and stuck.id not in delivered_ids(store)
    assert not list((tmp_path / ".partial").iterdir())  # the cut-off download was not kept
    fake.injections.clear()
    poll(fake, store, tmp_path)
    assert sorted(delivered_ids(store)) == sorted(big(fake))  # each exactly once
    assert store.watermark(fake.url, "alice") == max_updated(fake)


def _wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)
