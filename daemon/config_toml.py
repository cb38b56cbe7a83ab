"""Render a configuration as commented TOML: the top-level config.toml is this, for the defaults.

The comment above each key is the one written beside its field in the code, so the documented
meaning and default cannot drift from what runs (a test compares config.toml with this output).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from handlers.thresholds import PACK_IDENTITY, PACK_KEYS
from state.comments import field_comments

from .config import DATA_FOLDER_FILE, DEFAULT_DATA_DIR, ENUMS, Config, range_text

HEADER = """\
# facesetd configuration: every key with its default and meaning.
# Every key can also be set by an environment variable FACESETD_<SECTION>_<KEY>,
# e.g. FACESETD_MODELS_FACE_PACK=buffalo_sc; FACESETD_DATA_DIR sets paths.data_dir.
# Pass this file with `facesetd --config config.toml ...` (or FACESETD_CONFIG), or keep your keys in
# <data-dir>/facesetd.toml, which is read by default (below --config; environment variables override both).
"""

USERS_EXAMPLE = """\
# One table per Immich user whose library is polled (none by default):
# [[immich.users]]
# name = "alice"                    # a label for logs and events
# api_key_env = "IMMICH_KEY_ALICE"  # the NAME of the variable holding that user's key
"""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def render(config: Config | None = None, origins: dict[str, dict[str, str]] | None = None) -> str:
    """`config` (default: the built-in defaults) as commented TOML; `origins` (section -> key -> where its value
    comes from) adds that to the key's line: `facesetd config` says where the face pack's distances come from."""
    config = config or Config()
    origins = origins or {}
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
            origin = origins.get(section.name, {}).get(f.name)
            # the defaults: a pack-dependent key is shown commented out, so a copy of config.toml used as --config
            # never pins one pack's numbers on another
            if not origins and section.name == "identity" and f.name in PACK_KEYS:
                lines.append(f"# {f.name} = {toml_value(value)}  # (the default pack's; unset, each face pack's own)")
                continue
            lines.append(f"{f.name} = {toml_value(value)}" + (f"  # from: {origin}" if origin else ""))
        lines.append("")
        if section.name == "immich":
            lines.append(USERS_EXAMPLE)
        for name, table in tables:
            lines.append(f"[[{section.name}.{name}]]")
            for f in dataclasses.fields(table):
                lines.append(f"{f.name} = {toml_value(getattr(table, f.name))}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


REFERENCE_INTRO = f"""\
# Configuration reference

facesetd reads, lowest first: the built-in defaults; the data folder's own `{DATA_FOLDER_FILE}`
(`<data-dir>/{DATA_FOLDER_FILE}`, read by default; `facesetd models fetch --pack NAME` writes `models.face_pack`
there when no pack is configured or the configured one is missing, editing only that key); an optional TOML
file (`facesetd --config PATH`, or `FACESETD_CONFIG`); environment variables; `--data-dir`. Every key below can
be set by `FACESETD_<SECTION>_<KEY>` (upper case); values that are not strings are read as TOML values (`true`,
`0.8`, `["CPUExecutionProvider"]`). `FACESETD_DATA_DIR` is a short form of `FACESETD_PATHS_DATA_DIR`. The
top-level `config.toml` lists the same keys with their defaults; `facesetd config` prints the effective
configuration, `facesetd config --defaults` the defaults. This page is `facesetd config --reference`.

The data folder is `{DEFAULT_DATA_DIR}` unless `--data-dir`, `FACESETD_DATA_DIR` or `paths.data_dir` says
otherwise (the README's quick start uses `--data-dir ~/facesetd`). `run`, `reconcile`, `immich poll` and
`models fetch`/`export-clip` create it when its parent folder exists; every other command stops with a
one-line error when it does not exist, so a mistyped path never becomes a new, empty corpus.

Errors are one line that names the key: an unknown key, a wrong type, a value outside a fixed set or outside
the key's range (the range column), a path whose parent folder does not exist, or an unknown `FACESETD_`
variable (the closest key is suggested). Not settings, and so allowed: `FACESETD_CONFIG`, `FACESETD_DATA_DIR`,
the test and fault hooks `FACESETD_TEST_*`, `FACESETD_SOAK_*`, `FACESETD_CRASHPOINT*` and `FACESETD_SHARED`, and
a variable an `[[immich.users]]` entry names in `api_key_env` or `review.token_env` names. The daemon reloads the files on SIGHUP
(`systemctl reload facesetd`): keys marked "restart" in the applies column keep their running value until the
next start, and the reload's log line names them ("config reloaded; restart to apply: models.face_pack").
"""


def _pack_note() -> list[str]:
    """The face packs' own distances (PACK_IDENTITY), which apply where a key is not set."""
    lines = ["The defaults above are `buffalo_l`'s. Where these keys are not set, each face pack's own measured values",
             "apply (`handlers/thresholds.py` PACK_IDENTITY; `facesetd calibrate DIR` measures a pack on your photos and",
             "`facesetd config` says which value applies and where it comes from):", "",
             "| face pack | " + " | ".join(f"`{k}`" for k in PACK_KEYS) + " |", "|---|" + "---|" * len(PACK_KEYS)]
    for pack, table in sorted(PACK_IDENTITY.items()):
        lines.append(f"| `{pack}` | " + " | ".join(toml_value(table.get(k, "-")) for k in PACK_KEYS) + " |")
    return [*lines, ""]


def _eras_note() -> list[str]:
    """What one [[eras.buckets]] table holds, with the year's range from the field metadata."""
    from handlers.thresholds import EraBucket

    year = next(f for f in dataclasses.fields(EraBucket) if f.name == "year")
    return [
        "Each `[[eras.buckets]]` table has `faceset` (the era bucket), `family` (the identity whose new PNGs are",
        f"slotted into it) and `year` ({range_text(year.metadata['range'])}, the year its anchor photos were taken).",
        "",
    ]


def render_reference() -> str:
    """docs/configuration.md: one table per section (key, default, range, environment variable, when it applies,
    meaning)."""
    config = Config()
    out = [REFERENCE_INTRO]
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        comments = field_comments(type(values))
        out += [f"## [{section.name}]", "",
                "| key | default | range | environment variable | applies | meaning |", "|---|---|---|---|---|---|"]
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            default = "none" if isinstance(value, tuple) and f.name == "users" else toml_value(value)
            bounds = f.metadata.get("range")
            choices = ENUMS.get((section.name, f.name))
            allowed = range_text(bounds) if bounds else " \\| ".join(choices) if choices else ""
            applies = "restart" if f.metadata.get("restart") else "on reload"
            meaning = comments.get(f.name, "").replace("|", "\\|")
            env = f"FACESETD_{section.name.upper()}_{f.name.upper()}"
            out.append(f"| `{section.name}.{f.name}` | `{default}` | {allowed} | `{env}` | {applies} | {meaning} |")
        out.append("")
        if section.name == "identity":
            out += _pack_note()
        if section.name == "eras":
            out += _eras_note()
        if section.name == "review":
            out += [
                "The review pages (docs/review.md) on anything but loopback need a token: set `token_env` to the *name*",
                "of a variable holding it (`token_env = \"FACESETD_REVIEW_KEY\"`, then `export FACESETD_REVIEW_KEY=...`);",
                "without one such a `listen` refuses to start. The token never goes into the file or a log line.",
                "",
            ]
        if section.name == "immich":
            out += [
                "Each `[[immich.users]]` table has `name` (a label) and `api_key_env` (the *name* of the environment",
                "variable that holds that user's API key; the key itself never goes into the file or a log line).",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"
