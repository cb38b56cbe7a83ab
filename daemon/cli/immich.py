"""`facesetd immich check` and `facesetd immich poll --once`."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.lock import add_wait_argument
from state.errors import ConfigError, FacesetdError

NAME = "immich"
HELP = "Immich source: check the server and keys, or run one polling pass"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="immich_verb", metavar="SUBVERB", required=True)
    check = sub.add_parser("check", help="ping the server, read its version and each key's permissions")
    check.add_argument("--user", help="only this configured user")
    poll = sub.add_parser("poll", help="run one polling pass for every configured user and exit")
    poll.add_argument("--once", action="store_true", required=True, help="one pass, then exit (required)")
    poll.add_argument("--user", help="only this configured user")
    add_wait_argument(poll)


def configured_users(app: Any, only: str | None) -> list[Any]:
    settings = app.config.immich
    if not settings.url:
        raise ConfigError("immich.url is not set; add an [immich] section with url and [[immich.users]]")
    users = [u for u in settings.users if only is None or u.name == only]
    if not users:
        raise ConfigError(f"no immich user named {only!r}" if only else "no [[immich.users]] configured")
    return users


def _check(args: argparse.Namespace, app: Any) -> int:
    from daemon.immich.client import ImmichClient, ImmichError
    from daemon.immich.scheduler import client_for

    settings = app.config.immich
    users = configured_users(app, args.user)
    public = ImmichClient(settings.url, "", timeout_s=settings.timeout_s, retries=settings.retries)
    try:
        public.session.headers.pop("x-api-key")
        public.ping()
        print(f"server {settings.url}: reachable, Immich {public.version()}")
    finally:
        public.close()
    problems = []
    for user in users:
        try:
            client = client_for(settings, user)
        except FacesetdError as e:  # the key's variable is missing: say which, and go on
            problems.append(str(e))
            print(e)
            continue
        try:
            key = client.my_api_key()
            missing = client.missing_permissions()
            if missing:
                msg = f"user {user.name}: key {key.get('name')!r} lacks permission {', '.join(missing)}"
                problems.append(msg)
                print(msg)
            else:
                print(f"user {user.name}: key {key.get('name')!r} ok ({', '.join(key.get('permissions', []))})")
        except ImmichError as e:
            problems.append(f"user {user.name}: {e}")
            print(f"user {user.name}: {e}")
        finally:
            client.close()
    if problems:
        raise FacesetdError(f"immich check: {len(problems)} problem(s); first: {problems[0]}")
    return 0


def poll_users(app: Any, users: list[Any], store: Any) -> list[Any]:
    """One polling pass for each user, through `store` (app.import_store); their PollResults. A failure propagates
    (a single pass has no breaker): a one-line error and exit code 1."""
    from daemon.immich.poller import poll_user
    from daemon.immich.scheduler import client_for

    settings = app.config.immich
    results = []
    for user in users:
        client = client_for(settings, user)
        try:
            results.append(poll_user(client, store, app.config.staging_dir, user.name,
                                     page_size=settings.page_size, workers=settings.workers,
                                     min_face_px=app.config.identity.min_face_px,
                                     max_file_bytes=app.config.limits.max_file_bytes,
                                     video_max_bytes=app.config.video.max_file_bytes if settings.videos else None))
        finally:
            client.close()
    return results


def said(r: Any) -> str:
    """One pass's line: `user alice: listed 12; delivered 10, no_faces 2; watermark ...`."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "nothing new"
    return f"user {r.user}: listed {r.listed}; {counts}; watermark {r.watermark_after}"


def _poll_once(args: argparse.Namespace, app: Any) -> int:
    users = configured_users(app, args.user)
    app.lock_data_folder("immich poll", args.wait, "the running daemon polls Immich on its own schedule")
    pipeline = app.pipeline
    for result in poll_users(app, users, app.import_store()):
        print(said(result))
    # Then, as the daemon would: route the imported faces and run every check to completion.
    pipeline.settle()
    pipeline.promote_pool()
    return 0


def run(args: argparse.Namespace, app: Any) -> int:
    if args.immich_verb == "check":
        return _check(args, app)
    return _poll_once(args, app)
