"""The outage breaker, the per-user job around it, and the APScheduler wiring."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import structlog

from daemon.config import ImmichSettings, ImmichUser
from daemon.immich.breaker import OutageBreaker
from daemon.immich.client import ImmichClient
from daemon.immich.poller import format_ts
from daemon.immich.scheduler import ImmichScheduler, UserJob
from daemon.logs import configure_logging
from tests.immich_fake import FakeImmich, library
from tests.immich_memory_store import MemoryImportStore

KEY = "fake-key-Zq8w3LmP0xY"


@pytest.fixture
def logs():
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    yield lambda: [json.loads(line) for line in buf.getvalue().splitlines()]
    structlog.reset_defaults()


def test_breaker_opens_once_and_closes_on_probe(logs) -> None:
    b = OutageBreaker("http://x", threshold=2)
    b.record_failure("down")
    assert not b.open and b.allow(lambda: False)  # closed: no probe needed
    b.record_failure("down")
    b.record_failure("down")
    assert b.open
    assert not b.allow(lambda: False)
    assert not b.allow(lambda: 1 / 0)  # a probe that raises means still down
    assert b.allow(lambda: True) and not b.open and b.failures == 0
    events = [e["event"] for e in logs()]
    assert events.count("immich_polling_paused") == 1 and events.count("immich_polling_resumed") == 1


def test_job_pauses_during_outage_and_resumes(faces_dir: Path, tmp_path: Path, logs) -> None:
    settings = ImmichSettings(url="unused", page_size=4, workers=2, breaker_failures=2)
    with FakeImmich(api_key=KEY) as fake:
        library(fake, sorted((faces_dir / "identities" / "obama").glob("*.jpg")))
        client = ImmichClient(fake.url, KEY, timeout_s=0.5, retries=1, backoff_s=0.01)
        store = MemoryImportStore()
        job = UserJob(settings, ImmichUser("alice", "X"), client, store, tmp_path, OutageBreaker(fake.url, 2), 90)
        fake.inject("*", "500", times=10_000)  # the server is down, ping included
        for _ in range(5):
            assert job() is None
        assert job.breaker.open and store.watermark(fake.url, "alice") is None and store.delivered == []
        searches = fake.counts["searchAssets"]
        assert job() is None and fake.counts["searchAssets"] == searches  # while open: only a ping
        fake.injections.clear()  # the server is back
        r = job()
        assert r is not None and r.delivered == 6 and not job.breaker.open  # obama_small.jpg: 80 px, dropped
        assert store.watermark(fake.url, "alice") == format_ts(max(a.updated_at for a in fake.assets.values()))
        # 401 / 403: one clear error, logged once, no crash, no breaker
        fake.inject("searchAssets", "401", times=3)
        assert job() is None and job() is None
    assert fake.validation_errors == []
    events = [e for e in logs()]
    names = [e["event"] for e in events]
    assert names.count("immich_polling_paused") == 1 and names.count("immich_polling_resumed") == 1
    assert names.count("immich_key_refused") == 1 and not job.breaker.open
    assert KEY not in json.dumps(events)


def test_scheduler_one_job_per_user(faces_dir: Path, tmp_path: Path, monkeypatch) -> None:
    with FakeImmich(api_key=KEY) as fake:
        library(fake, [faces_dir / "identities" / "biden" / "biden.jpg"])
        settings = ImmichSettings(url=fake.url, interval_minutes=60,
                                  users=(ImmichUser("alice", "FACESETD_T_A"), ImmichUser("bob", "FACESETD_T_B")))
        env = {"FACESETD_T_A": KEY, "FACESETD_T_B": KEY}
        store = MemoryImportStore()
        s = ImmichScheduler(settings, store, tmp_path, environ=env, min_face_px=90)
        jobs = {j.id: j for j in s.scheduler.get_jobs()}
        assert set(jobs) == {"immich:alice", "immich:bob"}
        for j in jobs.values():
            assert j.max_instances == 1 and j.coalesce is True and j.trigger.interval.total_seconds() == 3600
        s.start()
        try:
            deadline = time.monotonic() + 10
            while len({d.user for d in store.delivered} | {k[1] for k in store.watermarks}) < 2:
                assert time.monotonic() < deadline, "the first passes did not run"
                time.sleep(0.05)
        finally:
            s.shutdown()
        assert len(store.delivered) == 1  # the same photo for both users is delivered once (sha256)
    assert fake.validation_errors == []


def test_scheduler_rejects_missing_key_variable(tmp_path: Path) -> None:
    from state.errors import ConfigError

    settings = ImmichSettings(url="http://127.0.0.1:9", users=(ImmichUser("alice", "FACESETD_T_NOPE"),))
    with pytest.raises(ConfigError, match="FACESETD_T_NOPE is not set"):
        ImmichScheduler(settings, MemoryImportStore(), tmp_path, environ={}, min_face_px=90)
