"""Render a configuration as commented TOML: the top-level config.toml is this, for the defaults.

The comment above each key is the one written beside its field in the code, so the documented
meaning and default cannot drift from what runs (a test compares config.toml with this output).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

from .config import Config

HEADER = """\
# facesetd configuration: every key with its default and meaning.
# Every key can also be set by an environment variable FACESETD_<SECTION>_<KEY>,
# e.g. FACESETD_MODELS_FACE_PACK=buffalo_sc; FACESETD_DATA_DIR sets paths.data_dir.
# Pass this file with `facesetd --config config.toml ...` (or FACESETD_CONFIG).
"""

USERS_EXAMPLE = """\
# One table per Immich user whose library is polled (none by default):
# [[immich.users]]
# name = "alice"                    # a label for logs and events
# api_key_env = "IMMICH_KEY_ALICE"  # the NAME of the variable holding that user's key
"""


_comments: dict[type, dict[str, str]] = {}


def field_comments(cls: type) -> dict[str, str]:
    """field name -> the comment lines written right above it in the class body."""
    if cls in _comments:
        return _comments[cls]
    out: dict[str, str] = _comments.setdefault(cls, {})
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text[1:].strip())
            continue
        m = re.match(r"(\w+)\s*:", text)
        if m and pending:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def render(config: Config | None = None) -> str:
    config = config or Config()
    lines = [HEADER]
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        comments = field_comments(type(values))
        lines.append(f"[{section.name}]")
        tables: list[tuple[str, Any]] = []
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if value and isinstance(value, tuple) and dataclasses.is_dataclass(value[0]):
                tables.extend((f.name, v) for v in value)
                continue
            if not value and f.name == "users":
                continue
            lines.append(f"# {comments.get(f.name, '')}")
            lines.append(f"{f.name} = {toml_value(value)}")
        lines.append("")
        if section.name == "immich":
            lines.append(USERS_EXAMPLE)
        for name, table in tables:
            lines.append(f"[[{section.name}.{name}]]")
            for f in dataclasses.fields(table):
                lines.append(f"{f.name} = {toml_value(getattr(table, f.name))}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


REFERENCE_INTRO = """\
# Configuration reference

facesetd reads an optional TOML file (`facesetd --config PATH`, or `FACESETD_CONFIG`), then environment
variables, then `--data-dir`. Every key below can be set by `FACESETD_<SECTION>_<KEY>` (upper case);
values that are not strings are read as TOML values (`true`, `0.8`, `["CPUExecutionProvider"]`).
`FACESETD_DATA_DIR` is a short form of `FACESETD_PATHS_DATA_DIR`. The top-level `config.toml` lists the same
keys with their defaults; `facesetd config` prints the effective configuration, `facesetd config --defaults` the
defaults. This page is `facesetd config --reference`.

Errors are one line that names the key: an unknown key, a wrong type, a value outside a fixed set, or a path whose
parent folder does not exist. The daemon reloads the file on SIGHUP (`systemctl reload facesetd`).
"""


def render_reference() -> str:
    """docs/configuration.md: one table per section (key, default, environment variable, meaning)."""
    config = Config()
    out = [REFERENCE_INTRO]
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        comments = field_comments(type(values))
        out += [f"## [{section.name}]", "", "| key | default | environment variable | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            default = "none" if isinstance(value, tuple) and f.name == "users" else toml_value(value)
            meaning = comments.get(f.name, "").replace("|", "\\|")
            env = f"FACESETD_{section.name.upper()}_{f.name.upper()}"
            out.append(f"| `{section.name}.{f.name}` | `{default}` | `{env}` | {meaning} |")
        out.append("")
        if section.name == "immich":
            out += [
                "Each `[[immich.users]]` table has `name` (a label) and `api_key_env` (the *name* of the environment",
                "variable that holds that user's API key; the key itself never goes into the file or a log line).",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"
