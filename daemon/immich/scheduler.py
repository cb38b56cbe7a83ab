"""One APScheduler 3.x interval job per configured Immich user (max_instances=1, coalesce).

Each job runs poller.poll_user behind the server's OutageBreaker. Auth and permission errors are
logged once per user until a pass succeeds again; outages and API errors (5xx, a listing that is not
one, another 4xx) count towards the breaker; the watermark never moves past a failure (poll_user sees
to that). cancel() cuts off every request in flight at once, so a stop never waits for a slow server.
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
from handlers.limits import Limits
from state.errors import ConfigError

from .breaker import OutageBreaker
from .client import ImmichAuthError, ImmichCancelled, ImmichClient, ImmichError, ImmichPermissionError
from .deadline import Cancel
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
                 staging_dir: Path, breaker: OutageBreaker, min_face_px: float,
                 max_file_bytes: int = Limits().max_file_bytes, video_max_bytes: int | None = None) -> None:
        self.settings, self.user, self.client, self.store = settings, user, client, store
        self.staging_dir, self.breaker = staging_dir, breaker
        self.min_face_px = min_face_px  # [identity] min_face_px; a SIGHUP may change it
        self.max_file_bytes = max_file_bytes  # [limits] max_file_bytes; a SIGHUP may change it
        # [video] max_file_bytes where [immich] videos is on (None: images only)
        self.video_max_bytes = video_max_bytes if settings.videos else None
        self.last_error: str | None = None

    def __call__(self) -> PollResult | None:
        if self.client.cancel.is_set() or not self.breaker.allow(self.client.ping):
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
                max_file_bytes=self.max_file_bytes,
                now=datetime.now(timezone.utc),
                video_max_bytes=self.video_max_bytes,
            )
        except ImmichCancelled:  # facesetd is stopping: not the server's fault
            log.info("immich_poll_cancelled", server=self.client.url, user=self.user.name)
            return None
        except (ImmichAuthError, ImmichPermissionError) as e:
            if str(e) != self.last_error:
                log.error("immich_key_refused", server=self.client.url, user=self.user.name, error=str(e))
            self.last_error = str(e)
            return None
        except ImmichError as e:  # unavailable, 5xx, a malformed listing, another 4xx: the breaker counts them
            was_open = self.breaker.open
            self.breaker.record_failure(str(e))
            if not was_open and not self.breaker.open:  # the breaker logs its own opening, and is quiet while open
                log.warning("immich_poll_failed", server=self.client.url, user=self.user.name, error=str(e))
            return None
        self.last_error = None
        self.breaker.record_success()
        return result


class ImmichScheduler:
    """A BackgroundScheduler with one interval job per user; start() and shutdown()."""

    def __init__(self, settings: ImmichSettings, store: ImportStore, staging_dir: Path,
                 environ: Mapping[str, str] | None = None, scheduler: BackgroundScheduler | None = None, *,
                 min_face_px: float, max_file_bytes: int = Limits().max_file_bytes,
                 video_max_bytes: int | None = None) -> None:
        self.settings = settings
        self.scheduler = scheduler or BackgroundScheduler(timezone=timezone.utc)
        # an open breaker first waits one polling interval, then twice as long after each failed trial
        self.breaker = OutageBreaker(settings.url, settings.breaker_failures, base_s=settings.interval_minutes * 60)
        self.cancel_all = Cancel()  # shared by every user's client: set at a stop
        self.jobs: dict[str, UserJob] = {}
        for user in settings.users:
            if user.name in self.jobs:
                raise ConfigError(f"immich.users: the name {user.name!r} is used twice")
            client = client_for(settings, user, environ, cancel=self.cancel_all)
            job = UserJob(settings, user, client, store, staging_dir, self.breaker, min_face_px, max_file_bytes,
                          video_max_bytes)
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

    def cancel(self) -> None:
        """Cut off every request in flight and start none: a running pass ends within moments (ImmichCancelled),
        its watermark over what it recorded only. Call before waiting for the scheduler's jobs."""
        self.cancel_all.set()

    def shutdown(self, wait: bool = True) -> None:
        self.cancel()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        for job in self.jobs.values():
            job.client.close()
