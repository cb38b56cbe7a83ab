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


class Clock:
    """The breaker's clock, moved by the test: the backoff is asserted on the breaker's states, not on timing."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_once_backs_off_and_closes_only_on_a_good_pass(logs) -> None:
    clock = Clock()
    b = OutageBreaker("http://x", threshold=2, base_s=10, max_s=40, clock=clock)
    b.record_failure("down")
    assert not b.open and b.allow(lambda: False)  # closed: no probe needed
    b.record_failure("HTTP 500")
    assert b.open and b.backoff_s == 10
    probes: list[float] = []

    def ping() -> bool:
        probes.append(clock.now)
        return True

    clock.now = 9.9
    assert not b.allow(ping) and probes == []  # waiting: not even a ping
    waits = []
    for _ in range(5):  # the ping answers, the API does not: each trial pass fails, and the wait doubles
        clock.now = b.retry_at
        assert b.allow(ping) and b.open  # a trial pass may run; the ping alone closes nothing
        assert not b.allow(ping)  # one trial at a time: another user's job waits for its outcome
        b.record_failure("HTTP 500")
        waits.append(b.backoff_s)
    assert waits == [20, 40, 40, 40, 40] and len(probes) == 5  # doubling, bounded by max_s
    clock.now = b.retry_at
    assert not b.allow(lambda: 1 / 0) and b.open and b.backoff_s == 40  # a probe that raises: still down
    clock.now = b.retry_at
    assert b.allow(ping)
    b.record_success()  # the trial pass went through
    assert not b.open and b.failures == 0 and b.allow(lambda: False)
    events = [e["event"] for e in logs()]
    assert events.count("immich_polling_paused") == 1 and events.count("immich_polling_resumed") == 1
    assert "immich_polling_still_paused" not in events  # debug lines: not at the daemon's default level


def test_job_pauses_during_outage_and_resumes(faces_dir: Path, tmp_path: Path, logs) -> None:
    settings = ImmichSettings(url="unused", page_size=4, workers=2, breaker_failures=2)
    clock = Clock()
    with FakeImmich(api_key=KEY) as fake:
        library(fake, sorted((faces_dir / "identities" / "obama").glob("*.jpg")))
        client = ImmichClient(fake.url, KEY, timeout_s=0.5, retries=1, backoff_s=0.01)
        store = MemoryImportStore()
        breaker = OutageBreaker(fake.url, 2, base_s=60, clock=clock)
        job = UserJob(settings, ImmichUser("alice", "X"), client, store, tmp_path, breaker, 90)
        fake.inject("*", "500", times=10_000)  # the server is down, ping included
        for _ in range(5):
            assert job() is None
        assert job.breaker.open and store.watermark(fake.url, "alice") is None and store.delivered == []
        asked = len(fake.requests)
        assert job() is None and len(fake.requests) == asked  # while it waits: no request at all
        clock.now += 60
        assert job() is None and [op for op, _ in fake.requests[asked:]] == ["pingServer"] * 2  # the ping, retried
        assert job.breaker.backoff_s == 120
        fake.injections.clear()  # the server is back
        assert job() is None  # still waiting out the doubled backoff
        clock.now += 120
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


def test_ping_answering_while_the_api_fails_keeps_polling_paused(faces_dir: Path, tmp_path: Path, logs) -> None:
    """Immich answers /server/ping but every API call is a 500 (or a listing that is not one): the breaker opens
    once and stays open through its trials, backing off, instead of pausing and resuming every interval."""
    settings = ImmichSettings(url="unused", page_size=4, workers=2, breaker_failures=2)
    clock = Clock()
    with FakeImmich(api_key=KEY) as fake:
        library(fake, sorted((faces_dir / "identities" / "obama").glob("*.jpg"))[:2])
        client = ImmichClient(fake.url, KEY, timeout_s=2.0, retries=0)
        breaker = OutageBreaker(fake.url, 2, base_s=60, max_s=240, clock=clock)
        job = UserJob(settings, ImmichUser("alice", "X"), client, MemoryImportStore(), tmp_path, breaker, 90)
        fake.inject("searchAssets", "500", times=3)
        fake.inject("searchAssets", "malformed", times=10_000, mutate=lambda body: [body])  # a list, not an object
        waits, runs = [], 0
        for _ in range(12):  # an hour and more of scheduled runs, one a minute
            runs += 1
            assert job() is None
            if breaker.open:
                waits.append(breaker.backoff_s)
            clock.now += 60
        searches, trials = fake.counts["searchAssets"], breaker.trials
        fake.injections.clear()
        clock.now = breaker.retry_at
        assert job() is not None and not breaker.open
    assert fake.validation_errors == []
    names = [e["event"] for e in logs()]
    assert names.count("immich_polling_paused") == 1 and names.count("immich_polling_resumed") == 1
    assert names.count("immich_poll_failed") == 1  # the first failure; the breaker speaks for the rest
    # two failed passes opened it; each failed trial doubled the wait, up to max_s; a waiting run asks nothing
    assert sorted(set(waits)) == [60, 120, 240] and waits == sorted(waits)
    assert searches == 2 + trials and trials == 3 and runs == 12


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
