"""The comments written beside dataclass fields, read from the source: the generated docs (config.toml,
docs/configuration.md, docs/events.md) take each field's meaning from where it is declared."""

from __future__ import annotations

import inspect
import re

_FIELD = re.compile(r"(\w+)\s*:[^#]*?(?:#\s*(.*))?$")  # `name: type = default  # comment`
_read: dict[type, dict[str, str]] = {}  # each class's source is read once


def field_comments(cls: type) -> dict[str, str]:
    """field name -> the comment lines right above it in the class body, then the one beside it, joined."""
    if cls in _read:
        return _read[cls]
    out = _read.setdefault(cls, {})
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text[1:].strip())
            continue
        m = _FIELD.match(text)
        if m:
            said = " ".join([*pending, m.group(2) or ""]).strip()
            if said:
                out[m.group(1)] = said
        pending = []
    return out
