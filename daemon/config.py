"""Configuration: typed sections, loaded from TOML, overridden by FACESETD_<SECTION>_<KEY>.

Each section is a frozen dataclass whose defaults live beside the code that uses them
(thresholds in handlers/thresholds.py, models in gpu_agent/settings.py, the rest here). The
top-level `config.toml` documents every key with its default; a test keeps the two equal.

Layers, lowest first: the built-in defaults, the data folder's own `facesetd.toml` (written by
`facesetd models fetch`, so the quick start's choice sticks), the `--config` file (or FACESETD_CONFIG),
the environment, `--data-dir`. Field metadata: "range" = (lowest, highest) allowed, either may be None;
"restart" = True when a running daemon applies the key only after a restart (not on SIGHUP).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from gpu_agent.settings import AgentSettings, ModelSettings
from handlers.limits import Limits
from handlers.thresholds import PACK_KEYS, EraSettings, IdentityThresholds, Thresholds, pack_identity
from handlers.video_frames import VideoSettings
from state.errors import ConfigError

ENV_PREFIX = "FACESETD_"
DEFAULT_DATA_DIR = "~/.local/share/facesetd"
# The data folder's own settings file, below --config in precedence (see the module docstring).
DATA_FOLDER_FILE = "facesetd.toml"
# FACESETD_ variables that are not settings: the config file, the data folder, and test and fault hooks.
NON_SETTING_VARS = frozenset({"FACESETD_CONFIG", "FACESETD_DATA_DIR", "FACESETD_SHARED"})
NON_SETTING_PREFIXES = ("FACESETD_CRASHPOINT", "FACESETD_FAILPOINT", "FACESETD_TEST_", "FACESETD_SOAK_")

RESTART = {"restart": True}  # metadata of a key a running daemon applies only after a restart


@dataclass(frozen=True)
class PathSettings:
    # the one folder holding corpus/, inbox/, state/, models/ and its own facesetd.toml unless a key below says otherwise.
    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata=RESTART)
    # the facesets_swap_ready folder; "" = <data_dir>/corpus.
    corpus: str = field(default="", metadata=RESTART)
    # where users drop photos; "" = <data_dir>/inbox.
    inbox: str = field(default="", metadata=RESTART)
    # where the event log lives; "" = <data_dir>/state.
    state: str = field(default="", metadata=RESTART)


@dataclass(frozen=True)
class ProjectionSettings:
    # the second .fsz per faceset holds N faces: those whose mean embedding lies closest to the faceset's centroid,
    # spread over source photos and poses, crop quality as a floor (state/topn.py).
    top_n: int = field(default=8, metadata={"range": (1, None)})
    # seconds a faceset's projections wait to coalesce a burst of changes into one rewrite.
    coalesce_s: float = field(default=0.5, metadata={"range": (0, 3600)})


@dataclass(frozen=True)
class WatchSettings:
    # use watchdog's polling observer (network shares, WSL /mnt/*) instead of inotify.
    polling: bool = field(default=False, metadata=RESTART)
    # seconds between polls when polling.
    poll_interval_s: float = field(default=1.0, metadata={"range": (0.05, 3600), **RESTART})
    # a file counts as complete when size and mtime stay unchanged this long (when no close event exists).
    settle_s: float = field(default=2.0, metadata={"range": (0, 3600), **RESTART})


@dataclass(frozen=True)
class QueueSettings:
    # most images waiting for the face engine before watchers are slowed down (back-pressure).
    max_pending: int = field(default=256, metadata={"range": (1, None)})
    # seconds between housekeeping passes (analyses missed while the models were down are asked for again); pool clustering itself runs after each processed photo.
    cluster_interval_s: float = field(default=60.0, metadata={"range": (0.1, None)})
    # seconds to wait before trying again when the face models cannot be opened or the gpu agent is down.
    model_retry_s: float = field(default=30.0, metadata={"range": (0.1, None)})
    # seconds a write waits for another process's lock on the event log before the daemon backs off and retries.
    log_busy_timeout_s: float = field(default=10.0, metadata={"range": (0, 3600), **RESTART})
    # seconds between two integrity checks of the event log (SQLite's quick_check, every event read back), besides the one at each start; a damaged log stops the daemon (exit 65).
    log_check_interval_s: float = field(default=86400.0, metadata={"range": (1, None), **RESTART})


@dataclass(frozen=True)
class ImmichUser:
    # a label for logs and events.
    name: str = ""
    # the NAME of the environment variable holding this user's API key (never the key itself).
    api_key_env: str = ""


@dataclass(frozen=True)
class ImmichSettings:
    # the server, e.g. "https://photos.example.org" ("" = Immich polling off).
    url: str = field(default="", metadata=RESTART)
    # minutes between polls.
    interval_minutes: float = field(default=15.0, metadata={"range": (0.001, None), **RESTART})
    # assets per search page (Immich allows up to 1000).
    page_size: int = field(default=250, metadata={"range": (1, 1000), **RESTART})
    # parallel face/original requests per poll.
    workers: int = field(default=8, metadata={"range": (1, 64), **RESTART})
    # seconds one HTTP request may take in all: its connect and every read, a streamed original's included.
    timeout_s: float = field(default=30.0, metadata={"range": (0.1, None), **RESTART})
    # retries with backoff on 5xx, timeouts and connection errors (none on 4xx).
    retries: int = field(default=3, metadata={"range": (0, 100), **RESTART})
    # failed polls in a row (no answer, 5xx, a bad listing) before polling pauses; tried again after one interval, then doubling up to an hour.
    breaker_failures: int = field(default=3, metadata={"range": (1, None), **RESTART})
    # also import VIDEO assets (their originals, up to [video] max_file_bytes; Immich's faces are not asked for: the inbox samples and routes their frames, as for a dropped clip); off: images only.
    videos: bool = field(default=False, metadata=RESTART)
    # where originals are staged before the inbox pipeline; "" = <data_dir>/state/immich_staging.
    staging: str = field(default="", metadata=RESTART)
    # one entry per user: [[immich.users]] name = "...", api_key_env = "..."
    users: tuple[ImmichUser, ...] = field(default=(), metadata=RESTART)


@dataclass(frozen=True)
class ReviewSettings:
    # serve the review pages (daemon/review/) from the daemon; `facesetd review` serves them without it.
    enabled: bool = field(default=True, metadata=RESTART)
    # HOST:PORT the review pages listen on; anything but loopback (127.0.0.1, ::1, localhost) needs token_env.
    listen: str = field(default="127.0.0.1:8476", metadata=RESTART)
    # the NAME of the environment variable holding the review token (never the token itself); "" = no token.
    token_env: str = field(default="", metadata=RESTART)
    # longest side in pixels of the cached thumbnails (WebP, under <state>/thumbs/, made once per sha256).
    thumb_px: int = field(default=160, metadata={"range": (32, 512), **RESTART})


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
    video: VideoSettings = field(default_factory=VideoSettings)
    immich: ImmichSettings = field(default_factory=ImmichSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
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

# Keys whose value must be one of a fixed set (checked on load, listed in the reference's range column).
ENUMS = {
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


# The scalar types of config fields: (accepts the TOML value?, what to call it in an error, conversion).
# bool is checked before int and float would take it: TOML `true` is no number.
_SCALARS: dict[Any, tuple[Callable[[Any], bool], str, Callable[[Any], Any]]] = {
    bool: (lambda v: isinstance(v, bool), "a boolean", lambda v: v),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", lambda v: v),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number", float),
    str: (lambda v: isinstance(v, str), "a string", lambda v: v),
}


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
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        accepts, what, convert = scalar
        if not accepts(value):
            raise ConfigError(f"{key}: expected {what}, got {value!r}")
        return convert(value)
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover


def range_text(bounds: tuple[float | None, float | None]) -> str:
    """A declared range for people: "0 – 1", ">= 1", "<= 10"."""
    lo, hi = bounds
    if lo is not None and hi is not None:
        return f"{lo} – {hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def _check_range(key: str, f: dataclasses.Field, value: Any) -> None:  # type: ignore[type-arg]
    """Raise ConfigError naming `key` when `value` is outside the range declared in the field's metadata."""
    bounds = f.metadata.get("range")
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = bounds
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return
    if lo is not None and hi is not None:
        raise ConfigError(f"{key}: must be between {lo} and {hi}, got {value!r}")
    if lo is not None:
        raise ConfigError(f"{key}: must be at least {lo}, got {value!r}")
    raise ConfigError(f"{key}: must be at most {hi}, got {value!r}")


def _build(cls: Any, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in table:
        if name not in fields:
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(fields))})")
    values = {}
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _coerce(key, hints[name], value)
        _check_range(key, fields[name], values[name])
        allowed = ENUMS.get((prefix, name))
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


def setting_variables() -> dict[str, tuple[str, str]]:
    """FACESETD_<SECTION>_<KEY> -> (section, key) for every key, plus FACESETD_DATA_DIR."""
    out = {}
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(typing.get_type_hints(Config)[section.name]):
            out[f"{ENV_PREFIX}{section.name}_{f.name}".upper()] = (section.name, f.name)
    out[f"{ENV_PREFIX}DATA_DIR"] = ("paths", "data_dir")
    return out


def _is_setting_like(var: str) -> bool:
    """A FACESETD_ variable that is meant as a setting (not the config path, a test or a fault hook)."""
    return var.startswith(ENV_PREFIX) and var not in NON_SETTING_VARS and not var.startswith(NON_SETTING_PREFIXES)


def _env_overrides(environ: typing.Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """FACESETD_<SECTION>_<KEY>=value for every key, checked here so an error names the variable."""
    out: dict[str, dict[str, Any]] = {}
    hints = typing.get_type_hints(Config)
    for var, (section, name) in setting_variables().items():
        if var not in environ:
            continue
        cls = hints[section]
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        key = f"{var} ({section}.{name})"
        tp = typing.get_type_hints(cls)[name]
        value = _coerce(key, tp, _parse_env_value(key, tp, environ[var]))
        _check_range(key, f, value)
        out.setdefault(section, {})[name] = value
    return out


def _unknown_variables(environ: typing.Mapping[str, str], config: Config) -> None:
    """A misspelt FACESETD_ variable would silently do nothing: make it an error naming the closest key.
    Variables an [[immich.users]] entry names as its key's holder are not settings either."""
    known = setting_variables()
    key_vars = {u.api_key_env for u in config.immich.users} | {config.review.token_env}
    for var in sorted(environ):
        if not _is_setting_like(var) or var in known or var in key_vars:
            continue
        close = difflib.get_close_matches(var, list(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else " (settings are FACESETD_<SECTION>_<KEY>)"
        raise ConfigError(f"{var}: unknown setting in the environment{hint}")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e


def _checked_file(path: Path) -> dict[str, Any]:
    """A config file's tables, validated on their own so an error names the file as well as the key."""
    raw = _read_toml(path)
    try:
        _build(Config, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return raw


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    """Overlay one layer on another, key by key within each section (a list replaces a list)."""
    for section, values in layer.items():
        existing = into.setdefault(section, {})
        if not isinstance(existing, dict) or not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a table")
        existing.update(values)


def resolve_data_dir(path: Path | None = None, *, data_dir: str | None = None,
                     environ: typing.Mapping[str, str] | None = None) -> Path:
    """The data folder the layers above the data folder's own file name (or the default)."""
    return _layers(path, data_dir, os.environ if environ is None else environ)[1]


def _layers(path: Path | None, data_dir: str | None,
            environ: typing.Mapping[str, str]) -> tuple[list[tuple[str, dict[str, Any]]], Path]:
    """[(origin, tables)] lowest first, and the data folder (which the data folder's file cannot move)."""
    top = _checked_file(path) if path is not None else {}
    env = _env_overrides(environ)
    folder = data_dir or env.get("paths", {}).get("data_dir") or top.get("paths", {}).get("data_dir")
    folder_path = Path(folder or DEFAULT_DATA_DIR).expanduser()
    layers: list[tuple[str, dict[str, Any]]] = []
    own = folder_path / DATA_FOLDER_FILE
    if own.is_file():
        tables = _checked_file(own)
        if "data_dir" in tables.get("paths", {}):
            raise ConfigError(f"{own}: paths.data_dir cannot be set in the data folder's own file")
        layers.append((str(own), tables))
    if path is not None:
        layers.append((str(path), top))
    layers.append(("environment", env))
    if data_dir is not None:
        layers.append(("--data-dir", {"paths": {"data_dir": data_dir}}))
    return layers, folder_path


def load_config(
    path: Path | None = None,
    *,
    data_dir: str | None = None,
    environ: typing.Mapping[str, str] | None = None,
    running_pack: str | None = None,
) -> Config:
    """Read the layers (defaults, <data-dir>/facesetd.toml, `path`, environment, `--data-dir`); validate all.

    `running_pack`: on a reload, the face pack the process runs with (models.face_pack applies at restart only),
    whose own [identity] distances then fill the keys the layers leave unset."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for _origin, tables in _layers(path, data_dir, environ)[0]:
        _merge(raw, tables)
    _pack_defaults(raw, running_pack)
    config = _build(Config, raw, "")
    _unknown_variables(environ, config)
    _check_paths(config)
    return config


def _face_pack(raw: dict[str, Any]) -> str:
    pack = raw.get("models", {}).get("face_pack", ModelSettings().face_pack)
    return pack if isinstance(pack, str) else ModelSettings().face_pack  # a wrong type is _build's to report


def _pack_defaults(raw: dict[str, Any], pack: str | None = None) -> None:
    """The face pack's own [identity] distances (handlers/thresholds.py PACK_IDENTITY) under every key the layers
    left unset; `pack` (default: the one the layers name) is the pack whose distances apply."""
    identity = raw.get("identity")
    if identity is not None and not isinstance(identity, dict):
        return  # _build says what is wrong with it
    for key, value in pack_identity(pack or _face_pack(raw)).items():
        raw.setdefault("identity", {}).setdefault(key, value)


def identity_origins(path: Path | None = None, *, data_dir: str | None = None,
                     environ: typing.Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each pack-dependent [identity] value in force comes from: the layer that sets it (a file's path, a
    variable's name), else "face pack NAME" (PACK_IDENTITY), else "built-in default"."""
    environ = os.environ if environ is None else environ
    layers = _layers(path, data_dir, environ)[0]
    raw: dict[str, Any] = {}
    for _origin, tables in layers:
        _merge(raw, tables)
    pack = _face_pack(raw)
    return {key: (_origin_in(layers, "identity", key, environ)
                  or (f"face pack {pack}" if key in pack_identity(pack) else "built-in default"))
            for key in PACK_KEYS}


def setting_origin(section: str, key: str, path: Path | None = None, *, data_dir: str | None = None,
                   environ: typing.Mapping[str, str] | None = None) -> str | None:
    """Which layer sets `section.key`: a file's path, the variable's name, "--data-dir"; None = the default."""
    environ = os.environ if environ is None else environ
    return _origin_in(_layers(path, data_dir, environ)[0], section, key, environ)


def _origin_in(layers: list[tuple[str, dict[str, Any]]], section: str, key: str,
               environ: typing.Mapping[str, str]) -> str | None:
    """The top layer of `layers` that sets `section.key` (the variable's name for the environment); None: none."""
    for origin, tables in reversed(layers):
        if key in tables.get(section, {}):
            if origin == "environment":
                return next(v for v, sk in setting_variables().items() if sk == (section, key) and v in environ)
            return origin
    return None


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


def restart_only(section: str, key: str) -> bool:
    """Whether a running daemon applies `section.key` only after a restart (field metadata)."""
    cls = typing.get_type_hints(Config)[section]
    return bool(next(f for f in dataclasses.fields(cls) if f.name == key).metadata.get("restart"))


def reload_merge(running: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """What a SIGHUP applies: `new`, except restart-only keys keep their running value.

    Returns (the config to run with, changed keys applied now, changed keys waiting for a restart)."""
    applied: list[str] = []
    waiting: list[str] = []
    sections = {}
    for section in dataclasses.fields(Config):
        old_values, new_values = getattr(running, section.name), getattr(new, section.name)
        keep = {}
        for f in dataclasses.fields(new_values):
            if getattr(old_values, f.name) == getattr(new_values, f.name):
                continue
            if f.metadata.get("restart"):
                keep[f.name] = getattr(old_values, f.name)
                waiting.append(f"{section.name}.{f.name}")
            else:
                applied.append(f"{section.name}.{f.name}")
        sections[section.name] = dataclasses.replace(new_values, **keep) if keep else new_values
    return Config(**sections), applied, waiting


# Writing the data folder's own file ----------------------------------------------------------------------

FOLDER_FILE_HEADER = """\
# facesetd settings for this data folder, read by default (a --config file and FACESETD_ variables override
# them). Every key, with its default and meaning: `facesetd config --defaults`.
"""


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_scalar(value: str | float) -> str:
    return _toml_string(value) if isinstance(value, str) else repr(value)


def _edit_key(text: str, section: str, key: str, value: str | float) -> str:
    """`text` with `[section] key = value`: that line's value replaced (its comment kept), else the line added
    under the section's header, else the section appended. Nothing else changes."""
    lines = text.splitlines(keepends=True)
    header = re.compile(rf"^\s*\[\s*{re.escape(section)}\s*\]\s*(#.*)?$")
    assignment = re.compile(rf"^(\s*{re.escape(key)}\s*=\s*)(\"(?:[^\"\\\\]|\\\\.)*\"|'[^']*'|[^\s#]+)(.*)$", re.S)
    new_line = f"{key} = {_toml_scalar(value)}\n"
    start = next((i for i, line in enumerate(lines) if header.match(line.rstrip("\r\n"))), None)
    if start is None:
        gap = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{text}{gap}[{section}]\n{new_line}"
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        m = assignment.match(lines[i])
        if m:
            lines[i] = m.group(1) + _toml_scalar(value) + m.group(3)
            return "".join(lines)
    lines.insert(start + 1, new_line)
    return "".join(lines)


def set_folder_settings(data_dir: Path, section: str, values: dict[str, str | float]) -> Path:
    """Set keys of one section in <data_dir>/facesetd.toml, editing only those keys (comments and other keys stay).

    The edit is checked by reading the result back: anything else changed (an unusual layout, a dotted or inline
    table) is a ConfigError asking the user to set the keys by hand, and the file is left as it was."""
    path = Path(data_dir) / DATA_FOLDER_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else FOLDER_FILE_HEADER
    before = tomllib.loads(text)
    new_text = text
    for key, value in values.items():
        new_text = _edit_key(new_text, section, key, value)
    expected = {**before, section: {**before.get(section, {}), **values}}
    try:
        ok = tomllib.loads(new_text) == expected
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        wanted = ", ".join(f"{k} = {_toml_scalar(v)}" for k, v in values.items())
        raise ConfigError(f"{path}: cannot set {', '.join(f'{section}.{k}' for k in values)} without touching other"
                          f" lines; set {wanted} under [{section}] yourself")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
    return path


def set_folder_setting(data_dir: Path, section: str, key: str, value: str | float) -> Path:
    """Set one key in <data_dir>/facesetd.toml (set_folder_settings)."""
    return set_folder_settings(data_dir, section, {key: value})
