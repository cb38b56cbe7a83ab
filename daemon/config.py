"""Configuration: typed sections, loaded from TOML, overridden by FACESETD_<SECTION>_<KEY>.

Each section is a frozen dataclass whose defaults live beside the code that uses them
(thresholds in handlers/thresholds.py, models in gpu_agent/settings.py, the rest here). The
top-level `config.toml` documents every key with its default; a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from gpu_agent.settings import AgentSettings, ModelSettings
from handlers.era import EraSettings
from handlers.limits import Limits
from handlers.thresholds import IdentityThresholds, Thresholds

from state.errors import ConfigError

ENV_PREFIX = "FACESETD_"
DEFAULT_DATA_DIR = "~/.local/share/facesetd"


@dataclass(frozen=True)
class PathSettings:
    # the one folder holding corpus/, inbox/, state/ and models/ unless a key below says otherwise.
    data_dir: str = DEFAULT_DATA_DIR
    # the facesets_swap_ready folder; "" = <data_dir>/corpus.
    corpus: str = ""
    # where users drop photos; "" = <data_dir>/inbox.
    inbox: str = ""
    # where the event log lives; "" = <data_dir>/state.
    state: str = ""


@dataclass(frozen=True)
class ProjectionSettings:
    # the second .fsz per faceset holds the top N faces by crop quality.
    top_n: int = 8
    # seconds a faceset's projections wait to coalesce a burst of changes into one rewrite.
    coalesce_s: float = 0.5


@dataclass(frozen=True)
class WatchSettings:
    # use watchdog's polling observer (network shares, WSL /mnt/*) instead of inotify.
    polling: bool = False
    # seconds between polls when polling.
    poll_interval_s: float = 1.0
    # a file counts as complete when size and mtime stay unchanged this long (when no close event exists).
    settle_s: float = 2.0


@dataclass(frozen=True)
class QueueSettings:
    # most images waiting for the face engine before watchers are slowed down (back-pressure).
    max_pending: int = 256
    # seconds between housekeeping passes (analyses missed while the models were down are asked for again); pool clustering itself runs after each processed photo.
    cluster_interval_s: float = 60.0
    # seconds to wait before trying again when the face models cannot be opened or the gpu agent is down.
    model_retry_s: float = 30.0
    # seconds a write waits for another process's lock on the event log before the daemon backs off and retries.
    log_busy_timeout_s: float = 10.0


@dataclass(frozen=True)
class ImmichUser:
    # a label for logs and events.
    name: str = ""
    # the NAME of the environment variable holding this user's API key (never the key itself).
    api_key_env: str = ""


@dataclass(frozen=True)
class ImmichSettings:
    # the server, e.g. "https://photos.example.org" ("" = Immich polling off).
    url: str = ""
    # minutes between polls.
    interval_minutes: float = 15.0
    # assets per search page (Immich allows up to 1000).
    page_size: int = 250
    # parallel face/original requests per poll.
    workers: int = 8
    # seconds before one HTTP request times out.
    timeout_s: float = 30.0
    # retries with backoff on 5xx and connection errors (none on 4xx).
    retries: int = 3
    # consecutive failed polls before polling pauses until the server answers again.
    breaker_failures: int = 3
    # where originals are staged before the inbox pipeline; "" = <data_dir>/state/immich_staging.
    staging: str = ""
    # one entry per user: [[immich.users]] name = "...", api_key_env = "..."
    users: tuple[ImmichUser, ...] = ()


@dataclass(frozen=True)
class LoggingSettings:
    # debug, info, warning or error.
    level: str = "info"
    # "auto" (JSON when stdout is not a terminal), "json" or "console".
    format: str = "auto"


@dataclass(frozen=True)
class Config:
    paths: PathSettings = field(default_factory=PathSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    gpu_agent: AgentSettings = field(default_factory=AgentSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    identity: IdentityThresholds = field(default_factory=IdentityThresholds)
    eras: EraSettings = field(default_factory=EraSettings)
    projection: ProjectionSettings = field(default_factory=ProjectionSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    limits: Limits = field(default_factory=Limits)
    immich: ImmichSettings = field(default_factory=ImmichSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    # Resolved folders -------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.paths.data_dir).expanduser()

    def _under(self, value: str, name: str) -> Path:
        return Path(value).expanduser() if value else self.data_dir / name

    @property
    def corpus_dir(self) -> Path:
        return self._under(self.paths.corpus, "corpus")

    @property
    def inbox_dir(self) -> Path:
        return self._under(self.paths.inbox, "inbox")

    @property
    def state_dir(self) -> Path:
        return self._under(self.paths.state, "state")

    @property
    def models_dir(self) -> Path:
        return self._under(self.models.root, "models")

    @property
    def staging_dir(self) -> Path:
        return Path(self.immich.staging).expanduser() if self.immich.staging else self.state_dir / "immich_staging"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "events.sqlite3"


# Loading -------------------------------------------------------------------------------------------

_ENUMS = {
    ("gpu_agent", "mode"): ("in-process", "http"),
    ("models", "clip_precision"): ("fp32", "int8"),
    ("logging", "level"): ("debug", "info", "warning", "error"),
    ("logging", "format"): ("auto", "json", "console"),
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check `value` against the declared field type; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a {_type_name(tp)}, got {type(value).__name__}")
        return tuple(_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a boolean, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover


def _build(cls: Any, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in table:
        if name not in known:
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(known))})")
    values = {}
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _coerce(key, hints[name], value)
        allowed = _ENUMS.get((prefix, name))
        if allowed and values[name] not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {values[name]!r}")
    return cls(**values)


def _parse_env_value(key: str, tp: Any, raw: str) -> Any:
    """Environment values are strings; read them as TOML values where the type is not a string."""
    if tp is str:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{key}: cannot read environment value {raw!r} as {_type_name(tp)}") from e


def _env_overrides(environ: typing.Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """FACESETD_<SECTION>_<KEY>=value for every scalar key; FACESETD_DATA_DIR for paths.data_dir."""
    out: dict[str, dict[str, Any]] = {}
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        sec_hints = typing.get_type_hints(hints[section.name])
        for f in dataclasses.fields(hints[section.name]):
            var = f"{ENV_PREFIX}{section.name}_{f.name}".upper()
            if var in environ:
                out.setdefault(section.name, {})[f.name] = _parse_env_value(
                    f"{var} ({section.name}.{f.name})", sec_hints[f.name], environ[var]
                )
    if f"{ENV_PREFIX}DATA_DIR" in environ:
        out.setdefault("paths", {})["data_dir"] = environ[f"{ENV_PREFIX}DATA_DIR"]
    return out


def load_config(
    path: Path | None = None,
    *,
    data_dir: str | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> Config:
    """Read `path` (optional), apply environment overrides, then `--data-dir`; validate everything."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
    for section, values in _env_overrides(environ).items():
        existing = raw.setdefault(section, {})
        if not isinstance(existing, dict):
            raise ConfigError(f"{section}: expected a table")
        existing.update(values)
    if data_dir is not None:
        raw.setdefault("paths", {})["data_dir"] = data_dir
    config = _build(Config, raw, "")
    _check_paths(config)
    return config


def _check_paths(config: Config) -> None:
    """Folders we create ourselves may be missing, but their parent must exist and be a folder."""
    checks = [
        ("paths.data_dir", config.data_dir),
        ("paths.corpus", config.corpus_dir),
        ("paths.inbox", config.inbox_dir),
        ("paths.state", config.state_dir),
        ("models.root", config.models_dir),
    ]
    for key, p in checks:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{key}: {p} exists and is not a folder")
    for key, explicit in (
        ("paths.corpus", config.paths.corpus),
        ("paths.inbox", config.paths.inbox),
        ("paths.state", config.paths.state),
        ("models.root", config.models.root),
    ):
        if explicit and not Path(explicit).expanduser().parent.is_dir():
            raise ConfigError(f"{key}: parent folder of {explicit} does not exist")


def flatten(config: Config) -> dict[str, Any]:
    """`section.key -> value` for every scalar key, for docs and `facesetd status`."""
    out: dict[str, Any] = {}
    for section in dataclasses.fields(config):
        for f in dataclasses.fields(getattr(config, section.name)):
            out[f"{section.name}.{f.name}"] = getattr(getattr(config, section.name), f.name)
    return out
