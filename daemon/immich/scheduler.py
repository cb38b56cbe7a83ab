"""One APScheduler 3.x interval job per configured Immich user (max_instances=1, coalesce).

Each job runs poller.poll_user behind the server's OutageBreaker. Auth and permission errors are
logged once per user until a pass succeeds again; outages count towards the breaker; the
watermark never moves past a failure (poll_user sees to that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.config import ImmichSettings, ImmichUser
from daemon.logs import register_secret
from state.errors import ConfigError

from .breaker import OutageBreaker
from .client import ImmichAuthError, ImmichClient, ImmichError, ImmichPermissionError, ImmichUnavailable
from .poller import PollResult, poll_user
from .store import ImportStore

log = structlog.get_logger("facesetd.immich")


def api_key_for(user: ImmichUser, environ: Mapping[str, str] | None = None) -> str:
    """The user's key from the environment variable the config names; registered for redaction."""
    environ = os.environ if environ is None else environ
    if not user.api_key_env:
        raise ConfigError(f"immich.users: user {user.name!r} has no api_key_env")
    key = environ.get(user.api_key_env, "").strip()
    if not key:
        raise ConfigError(
            f"immich user {user.name!r}: environment variable {user.api_key_env} is not set or empty"
        )
    register_secret(key)
    return key


def client_for(settings: ImmichSettings, user: ImmichUser, environ: Mapping[str, str] | None = None, **kw: Any) -> ImmichClient:
    if not settings.url:
        raise ConfigError("immich.url is not set")
    return ImmichClient(
        settings.url,
        api_key_for(user, environ),
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        pool_size=settings.workers,
        **kw,
    )


class UserJob:
    """One user's scheduled pass, callable by APScheduler or directly (tests, `poll --once`)."""

    def __init__(self, settings: ImmichSettings, user: ImmichUser, client: ImmichClient, store: ImportStore,
                 staging_dir: Path, breaker: OutageBreaker, min_face_px: float) -> None:
        self.settings, self.user, self.client, self.store = settings, user, client, store
        self.staging_dir, self.breaker = staging_dir, breaker
        self.min_face_px = min_face_px  # [identity] min_face_px; a SIGHUP may change it
        self.last_error: str | None = None

    def __call__(self) -> PollResult | None:
        if not self.breaker.allow(self.client.ping):
            return None
        try:
            result = poll_user(
                self.client,
                self.store,
                self.staging_dir,
                self.user.name,
                page_size=self.settings.page_size,
                workers=self.settings.workers,
                min_face_px=self.min_face_px,
                now=datetime.now(timezone.utc),
            )
        except (ImmichAuthError, ImmichPermissionError) as e:
            if str(e) != self.last_error:
                log.error("immich_key_refused", server=self.client.url, user=self.user.name, error=str(e))
            self.last_error = str(e)
            return None
        except ImmichUnavailable as e:
            self.breaker.record_failure(str(e))
            if not self.breaker.open:
                log.warning("immich_poll_failed", server=self.client.url, user=self.user.name, error=str(e))
            return None
        except ImmichError as e:  # another 4xx on the listing: not an outage; try again next interval
            log.error("immich_poll_failed", server=self.client.url, user=self.user.name, error=str(e))
            return None
        self.last_error = None
        self.breaker.record_success()
        return result


class ImmichScheduler:
    """A BackgroundScheduler with one interval job per user; start() and shutdown()."""

    def __init__(self, settings: ImmichSettings, store: ImportStore, staging_dir: Path,
                 environ: Mapping[str, str] | None = None, scheduler: BackgroundScheduler | None = None, *,
                 min_face_px: float) -> None:
        self.settings = settings
        self.scheduler = scheduler or BackgroundScheduler(timezone=timezone.utc)
        self.breaker = OutageBreaker(settings.url, settings.breaker_failures)
        self.jobs: dict[str, UserJob] = {}
        for user in settings.users:
            if user.name in self.jobs:
                raise ConfigError(f"immich.users: the name {user.name!r} is used twice")
            client = client_for(settings, user, environ)
            job = UserJob(settings, user, client, store, staging_dir, self.breaker, min_face_px)
            self.jobs[user.name] = job
            self.scheduler.add_job(
                job,
                "interval",
                minutes=settings.interval_minutes,
                id=f"immich:{user.name}",
                name=f"immich poll {user.name}",
                max_instances=1,
                coalesce=True,
                replace_existing=True,
                next_run_time=datetime.now(timezone.utc),  # the first pass right away
            )

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        for job in self.jobs.values():
            job.client.close()
