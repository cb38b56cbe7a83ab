"""File names as the OS has them (bytes) and as events, SQLite and logs can hold them (valid UTF-8).

On Linux a name is any bytes but '/' and NUL. Python hands a name that is not UTF-8 over as a str with
surrogate escapes ('\\udce9' for the byte 0xe9), which SQLite, strict UTF-8 streams and JSON readers
refuse. So every name that leaves the file system is *escaped*: undecodable bytes are written as
'\\xe9' (backslash, x, two hex digits), everything else stays as it is. The escaped form is readable
and valid UTF-8, but not unique (a file may really be called 'caf\\xe9.png'), so where the exact name
matters it travels beside it as hex of the exact bytes (`exact_hex`).

Also here: the one list of temporary name endings (the watcher and the inbox both use it) and names
that fit NAME_MAX (255 bytes per path component, as the kernel counts: bytes, not characters).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

NAME_MAX = 255  # bytes in one path component (Linux, and every file system we run on)
PATH_MAX = 4096  # bytes in a whole path the kernel takes, its closing NUL included (Linux)

# Name endings of files still being written: partial downloads (browsers, curl, rsync), editors'
# backups, temp files. Compared lower-case. Our own atomic writes ('.<name>.tmp-<random>') are hidden.
TEMP_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", "~")
# An extension longer than this (bytes, dot included) is taken as part of the stem when shortening.
_MAX_EXT = 16


def is_temp_name(name: str) -> bool:
    """Whether a file name (one component) says the file is still being written."""
    lower = name.lower()
    return ".tmp-" in lower or lower.endswith(TEMP_SUFFIXES)


def to_bytes(name: str | bytes) -> bytes:
    """The exact bytes of a name as the OS has it (a str from os.* may carry surrogate escapes)."""
    return name if isinstance(name, bytes) else os.fsencode(name)


def escape(text: str | bytes) -> str:
    """A valid UTF-8 form of a name or any text: bytes that are not UTF-8 become '\\xNN'.

    Valid names come back unchanged. Also safe on text with stray surrogates that did not come from
    the file system (they are written as '\\udcNN'): a log line must never fail on what it shows.
    """
    if isinstance(text, str):
        try:
            raw = os.fsencode(text)
        except UnicodeEncodeError:  # surrogates os.fsdecode would not make: escape them as they are
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    else:
        raw = text
    return raw.decode("utf-8", "backslashreplace")


def is_exact(name: str) -> bool:
    """True when the escaped form of `name` is `name` itself (it is valid UTF-8)."""
    return escape(name) == name


def exact_hex(name: str | bytes) -> str:
    """Hex of the exact bytes of `name` when its escaped form differs from them, else ""."""
    raw = to_bytes(name)
    return raw.hex() if raw.decode("utf-8", "backslashreplace").encode("utf-8") != raw else ""


def os_name(shown: str, hex_bytes: str = "") -> str:
    """The name as the OS has it (a str for os.* and Path) from its escaped form and `exact_hex`."""
    return os.fsdecode(bytes.fromhex(hex_bytes)) if hex_bytes else shown


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    raw = os.fsencode(text)
    if len(raw) <= limit:
        return text
    return raw[: max(limit, 0)].decode("utf-8", "ignore")


def _split_ext(name: str) -> tuple[str, str]:
    """(stem, '.ext'); a name without a usable extension is all stem."""
    stem, dot, ext = name.rpartition(".")
    if not stem or not dot or len(os.fsencode(dot + ext)) > _MAX_EXT:
        return name, ""
    return stem, dot + ext


def fit(name: str, tag: str = "") -> str:
    """`name` with `tag` before its extension, the stem shortened so the whole fits NAME_MAX bytes.

    fit("a.jpg") == "a.jpg", fit("a.jpg", "_2") == "a_2.jpg"; a name of 255 bytes keeps its extension
    and the tag and loses the end of its stem instead. Works on escaped names (valid UTF-8).
    """
    stem, ext = _split_ext(name)
    budget = NAME_MAX - len(os.fsencode(tag + ext))
    if budget < 1:  # an absurd tag: keep what fits of the whole
        return _cut(stem + tag + ext, NAME_MAX)
    return _cut(stem, budget) + tag + ext


def fit_path(rel: str) -> str:
    """Every component of a '/'-separated relative path fitted to NAME_MAX bytes."""
    return "/".join(fit(part) for part in rel.split("/"))


def numbered(rel: str, sep: str = "_") -> Iterator[str]:
    """rel (fitted), then rel with <sep>1, <sep>2 ... before its extension, every name within NAME_MAX."""
    folder, slash, name = rel.rpartition("/")
    folder = fit_path(folder) + slash if folder else ""
    yield folder + fit(name)
    k = 1
    while True:
        yield folder + fit(name, f"{sep}{k}")
        k += 1


def fits_path_max(path: Path | str) -> bool:
    """Whether the kernel takes `path` whole: under PATH_MAX bytes with its closing NUL."""
    return len(os.fsencode(path)) < PATH_MAX


TEMP_RANDOM = 8  # random characters after a temp name's '.tmp-' (mkstemp's, and state.atomic's own)


def temp_prefix(name: str) -> str:
    """The start of a temp file's name beside `name`: '.<name>.tmp-', the name cut so that the whole temp name
    (with the 8 random characters mkstemp or we add) stays within NAME_MAX bytes whatever `name` is."""
    return f".{_cut(name, NAME_MAX - len('..tmp-') - TEMP_RANDOM)}.tmp-"


def lexists(path: Path) -> bool:
    """Whether anything (a dangling link included) is at `path`; never raises for a long name (nothing can be
    at a name or path past NAME_MAX or PATH_MAX)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return False
        raise
    return True


# --- Symbolic links ----------------------------------------------------------------------------------

LINK_DANGLING = "symlink_dangling"  # points nowhere (or in a loop)
LINK_OUTSIDE = "symlink_outside"  # resolves outside the folders facesetd owns: never followed
LINK_NOT_A_FILE = "symlink_not_a_file"  # resolves to a folder, a device, a socket ...
LINK_REASONS = (LINK_DANGLING, LINK_OUTSIDE, LINK_NOT_A_FILE)


def link_problem(link: Path, allowed: tuple[Path, ...]) -> str:
    """Why the symbolic link `link` must not be followed ("" when it may be).

    It may be followed only when it resolves to a regular file under one of `allowed` (the data folder,
    and the inbox where that is configured elsewhere). Only the link and its target's metadata are
    looked at: nothing outside those folders is ever opened.
    """
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a loop, or a component we may not search
        return LINK_DANGLING
    if not any(target.is_relative_to(root.resolve()) for root in allowed):
        return LINK_OUTSIDE
    if not target.is_file():
        return LINK_NOT_A_FILE
    return ""


def link_target(link: Path) -> str:
    """Where a symbolic link points, escaped (for events and logs); "" when it is not a link."""
    try:
        return escape(os.readlink(link))
    except OSError:
        return ""

