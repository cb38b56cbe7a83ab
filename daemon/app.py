"""What every verb needs: the loaded config, logging, and (opened on first use) the event log and engines."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

import structlog

from state.errors import ConfigError

from .config import DEFAULT_DATA_DIR, Config, load_config
from .lock import STOP_IT, DataFolderBusy, DataLock
from .logs import configure_logging, register_secret

LOG_TO_STDOUT = ("run", "gpu-agent")  # verbs whose process is a service


class App:
    def __init__(self, config: Config, config_path: Path | None = None, log_stream: TextIO | None = None,
                 verbose: bool | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.log_stream = log_stream
        self.verbose = verbose  # None: a service's log; else a one-shot verb's -v/--verbose (daemon.logs.log_level)
        configure_logging(config.logging.level, config.logging.format, stream=log_stream, verbose=verbose)
        register_secret(config.gpu_agent.token)
        for user in config.immich.users:
            register_secret(os.environ.get(user.api_key_env))
        if config.review.token_env:  # the review pages' token: never in a log line either
            register_secret(os.environ.get(config.review.token_env))
        self.log = structlog.get_logger("facesetd")
        self._closers: list[Any] = []
        # How long a write waits for another process's lock on the event log (then LogBusy).
        self.log_wait_s = config.queue.log_busy_timeout_s

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> App:
        config_path = args.config or (Path(os.environ["FACESETD_CONFIG"]) if os.environ.get("FACESETD_CONFIG") else None)
        # The resident processes' stdout is their log (journald); the one-shot verbs keep stdout for their
        # own output (`reconcile --json | jq`, `events --json`) and log to stderr.
        service = args.verb in LOG_TO_STDOUT
        stream = sys.stdout if service else sys.stderr
        verbose = None if service else bool(getattr(args, "verbose", False))
        return cls(load_config(config_path, data_dir=args.data_dir), config_path, log_stream=stream, verbose=verbose)

    def reload_config(self) -> Config:
        """The configuration read again (SIGHUP); the face pack in use stays until a restart, and so do the
        distances it brings where none is set."""
        self.config = load_config(self.config_path, data_dir=str(self.config.data_dir),
                                  running_pack=self.config.models.face_pack)
        return self.config

    def configure_logging(self) -> None:
        """Apply the current config's logging settings (after a reload)."""
        configure_logging(self.config.logging.level, self.config.logging.format, stream=self.log_stream,
                          verbose=self.verbose)

    def check_data_folder(self, use: str) -> None:
        """Make sure the data folder fits the verb: "read" needs it to exist, "create" may make it (only the
        last folder of the path, so a mistyped path is an error rather than a new empty corpus; the default
        may get its parents, e.g. ~/.local/share), "none" works without one."""
        folder = self.config.data_dir
        if use == "none" or folder.is_dir():
            return
        default = self.config.paths.data_dir == DEFAULT_DATA_DIR
        which = " (the default data folder; pass --data-dir DIR or set FACESETD_DATA_DIR to use another)" if default \
            else " (check --data-dir)"
        if use == "read":
            raise ConfigError(f"data folder {folder} does not exist{which}; `facesetd reconcile` or "
                              "`facesetd run` creates a new one")
        if not default and not folder.parent.is_dir():
            raise ConfigError(f"data folder {folder} cannot be created: {folder.parent} does not exist{which}")
        folder.mkdir(parents=default, exist_ok=True)

    def ensure_folders(self) -> None:
        for p in (self.config.corpus_dir, self.config.inbox_dir, self.config.state_dir, self.config.models_dir):
            p.mkdir(parents=True, exist_ok=True)

    def lock_data_folder(self, verb: str, wait_s: float = 0.0, daemon_hint: str = STOP_IT, *,
                         not_for_daemon: bool = False) -> None:
        """Take the data folder's lock for a writing verb (daemon/lock.py), held until close().

        Raises DataFolderBusy (one line, exit 1) when another facesetd keeps it past `wait_s`; call it
        before the first use of `events` or `pipeline`, whose busy timeout then is at least `wait_s`."""
        lock = DataLock(self.config.state_dir, self._lock_where())
        lock.acquire(verb, wait_s, daemon_hint, not_for_daemon=not_for_daemon)
        self._closers.append(lock)
        # A one-shot verb waits for the log's write lock as long as it was willing to wait for the folder; the
        # daemon keeps [queue] log_busy_timeout_s (its loop must go on pinging systemd).
        if verb != "run":
            self.log_wait_s = max(self.log_wait_s, wait_s)

    def correct(self, verb: str, action: str, form: dict[str, str], wait_s: float,
                here: Callable[[], int] | None = None) -> int:
        """Make the change `action` (daemon/review/actions.py) asks for with `form`; the id of the event recorded.

        With no daemon on the data folder it is made here, under the folder's lock (waiting up to `wait_s` for
        another one-shot verb). While `facesetd run` holds the folder it is handed to the daemon through its
        control socket (daemon/control.py) and made on its worker, as a click on its review page is. `here`, when
        given, makes the change in this process instead of the action (a lighter way to the same result)."""
        from .control import ControlError, ask
        from .review.actions import action as named

        try:
            self.lock_data_folder(verb, wait_s, not_for_daemon=True)
        except DataFolderBusy as busy:
            if busy.holder.verb != "run":
                raise
            try:
                answer = ask(self.config.state_dir, {"action": action, "form": form}, pid=busy.holder.pid)
            except ControlError as unreachable:
                try:  # it may have stopped meanwhile: then the change is made here
                    self.lock_data_folder(verb, 0.0, not_for_daemon=True)
                except DataFolderBusy:
                    raise unreachable from None
            else:
                return int(answer["position"])
        return here() if here is not None else named(action)(self.pipeline, form)

    def _lock_where(self) -> Path:
        """What a lock message calls the guarded folder: the data folder, unless the state lives elsewhere."""
        state = self.config.state_dir
        return self.config.data_dir if state == self.config.data_dir / "state" else state

    @cached_property
    def events(self) -> Any:
        """The event log (state.eventlog.EventLog), opened on first use."""
        from state.eventlog import EventLog

        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        log = EventLog(self.config.log_path, busy_timeout_s=self.log_wait_s)
        self._closers.append(log)
        return log

    def close(self) -> None:
        for c in reversed(self._closers):
            c.close()
        self._closers.clear()

    @cached_property
    def pipeline(self) -> Any:
        """The corpus pipeline (daemon.pipeline.Pipeline) on the event log."""
        from .pipeline import Pipeline

        self.ensure_folders()
        return Pipeline(self.config, self.events, open_engines=self.open_engines)

    def import_store(self, corpus: Any = None) -> Any:
        """The Immich poller's store on the event log; each import is handed to the inbox pipeline. `corpus` (the
        pipeline's state by default) answers "these bytes are already in the corpus"."""
        from .immich.store import EventLogImportStore, StagedAsset
        from .inbox import photo_event

        staging = self.config.staging_dir

        def hand_to_inbox(asset: StagedAsset) -> list[Any]:
            rel = asset.path.resolve().relative_to(staging.resolve()).as_posix()
            provenance: dict[str, Any] = {
                "immich": {"server": asset.server, "user": asset.user, "asset_id": asset.asset_id,
                           "original_file_name": asset.original_file_name},
                "faces": [list(b) for b in asset.faces],
            }
            if asset.taken_at:
                provenance["taken_at"] = asset.taken_at[:10]
            return [photo_event(staging, rel, root="staging", provenance=provenance)]

        # The pipeline's corpus state answers "these bytes are already in the corpus".
        return EventLogImportStore(self.events, hand_to_inbox, corpus=corpus if corpus is not None else self.pipeline.state)

    def open_engines(self) -> Any:
        """(face engine, occlusion scorer), in-process or over the loopback agent, per config."""
        from gpu_agent import open_engines

        return open_engines(self.config.models, self.config.gpu_agent, self.config.models_dir)
