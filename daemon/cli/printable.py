"""Text for a terminal: names, paths, labels and reasons shown with their control characters escaped, and
counts with their noun in the singular for one.

A file name (or a label) is any text its owner chose, escape sequences included: `ESC]0;title BEL` retitles the
terminal, `ESC[2J` clears it, a carriage return hides what came before it on the line. Every text a verb prints
that came from a user or the file system goes through `printable` first; JSON output does not (json.dumps
escapes control characters itself, and a reader of JSON needs the exact text).
"""

from __future__ import annotations

from state import names

# C0 controls (NUL..US), DEL and the C1 controls (U+0080..U+009F; a terminal takes U+009B as CSI): what
# Unicode calls category Cc. Each is written as Python writes it in a string literal, '\x1b'.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS_KEEP_NEWLINE = {c: e for c, e in _CONTROLS.items() if c != 0x0A}


def printable(text: object, keep_newlines: bool = False) -> str:
    """`text` (str() of it) with every control character escaped as '\\x1b'; with `keep_newlines`, a '\\n'
    stays (a message of several lines), every other control character is still escaped. Bytes of a name that
    are not UTF-8 (surrogate escapes, from a command line) are written '\\xe9' as in the log (state.names).

    Not reversible (a name may really hold a backslash and 'x1b'): for reading, not for looking a file up."""
    return names.escape(str(text)).translate(_CONTROLS_KEEP_NEWLINE if keep_newlines else _CONTROLS)


def counted(n: int, noun: str, plural: str = "") -> str:
    """`n` and its noun, singular for one: counted(1, "photo") == "1 photo", counted(3, "photo") == "3 photos";
    `plural` where adding an s is wrong (counted(2, "identity", "identities"))."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
