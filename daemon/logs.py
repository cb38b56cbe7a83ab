"""structlog setup: JSON lines off a terminal (journald-friendly), coloured lines on one; secrets redacted.

Everything a process writes to its log goes through the same renderer: our structlog lines, the stdlib
`logging` of libraries (watchdog, apscheduler, urllib3, ...), Python warnings (a library's
RuntimeWarning, say) and exceptions that end a thread. So journald only ever gets one
JSON object per line, each with its secrets redacted.

INFO reads as a story: one line per photo (its faces and where each went), one per decision (prune,
quarantine, promotion, restore) with its reason and event id. Per-event lines ("event appended") are DEBUG.

A one-shot verb at a terminal is read by a person: its log shows warnings and errors only (INFO too with
`-v/--verbose`), each line printed above its progress bars. A service's log (`run`, `gpu-agent serve`) and any
log into a pipe or a file keep `[logging] level`, unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TextIO

import structlog
import structlog.tracebacks

from state.names import escape

# Keys whose values are secrets wherever they appear in an event dict.
SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password|authorization|x-api-key|cookie)", re.I)
# Secrets that might be embedded in free text (exception messages, URLs, headers).
SECRET_TEXT = [
    re.compile(r"(?i)(x-api-key|authorization|api[_-]?key|token|apikey)([\"']?\s*[:=]\s*[\"']?)(bearer\s+)?([^\s\"',&}]+)"),
]
REDACTED = "[redacted]"
# Tracebacks as JSON without the frames' local variables: structlog shows them by default, cut to 80 characters,
# and a cut repr can hold part of a secret that redaction (which matches whole values) then misses.
TRACEBACKS = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))

_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is replaced wherever it shows up in a log line."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def redact_text(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in SECRET_TEXT:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{REDACTED}", text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if SECRET_KEYS.search(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        # escape(): a file name that is not UTF-8 (surrogate escapes) must not break a strict UTF-8 stream.
        return redact_text(escape(value))
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(key, v) for v in value)
    return value


def redact_secrets(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: blank secret-named keys and known secret values anywhere in the event."""
    return {k: _redact_value(k, v) for k, v in event_dict.items()}


def _escaped(key: str, value: Any) -> Any:
    """`value` with the control characters of every string in it escaped (dicts and lists walked)."""
    from daemon.cli.printable import printable

    if isinstance(value, str):
        return printable(value, keep_newlines=key == "exception")  # a traceback keeps its lines
    if isinstance(value, dict):
        return {k: _escaped(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_escaped(key, v) for v in value)
    return value


def escape_controls(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor for the terminal's coloured lines: a file name's or a label's control characters
    escaped ('\\x1b'), so a name cannot retitle or clear the terminal. (JSON lines escape them already.)"""
    return {k: _escaped(k, v) for k, v in event_dict.items()}


# Libraries log at this level or above (or at ours, when that is higher): their INFO and DEBUG lines are
# about their own machinery (a job added, a connection opened), not about the corpus.
LIBRARY_LEVEL = logging.WARNING
# OpenCV's own log (a TIFF's unknown tag: `[ WARN:0@19.5] global grfmt_tiff.cpp:...`) is raw text on stderr, which
# would break the log's one JSON object per line; a decode that fails reaches facesetd as a failed decode, which it
# logs itself (`photo rejected`, with the reason). An OPENCV_LOG_LEVEL set in the environment wins.
OPENCV_LOG_LEVEL = "SILENT"
# A one-shot verb's log at a terminal shows this level and up (or [logging] level, when higher): the person reads
# its progress bars and its summary; -v/--verbose shows INFO too. Off a terminal the configured level is kept.
TERMINAL_LEVEL = logging.WARNING

warnings_log = structlog.get_logger("py.warnings")
threads_log = structlog.get_logger("facesetd.threads")


class _OurHandler(logging.Handler):
    """The root logger's handler that configure_logging installs (and replaces when called again).

    It writes through a structlog PrintLogger on the same stream, so it shares structlog's lock for that
    stream: a library's line never lands in the middle of one of ours."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.printer = structlog.PrintLogger(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.printer.msg(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """warnings.showwarning: a warning becomes one log line instead of two raw lines on stderr."""
    if file is not None:  # a caller that asked for a particular file gets it
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, file, line)
        return
    warnings_log.warning("python warning", category=category.__name__, message=str(message),
                         location=f"{filename}:{lineno}")


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: an exception that ends a thread is logged (with its traceback) as one line."""
    if args.exc_type is SystemExit:
        return
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None
    if args.exc_value is not None:
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    name = args.thread.name if args.thread is not None else "?"
    threads_log.error("thread ended by an exception", thread=name, error=f"{args.exc_type.__name__}: {args.exc_value}",
                      exc_info=exc_info)


_ORIGINAL_SHOWWARNING = warnings.showwarning


def _route_stdlib(level: int, stream: TextIO, renderer_tail: list[Any], shared: list[Any]) -> None:
    """Send the stdlib logging of every library through the same processors and stream as ours."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer_tail],
    )
    handler = _OurHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, LIBRARY_LEVEL))


class _AboveBars:
    """A terminal stream whose whole lines are written with tqdm.write once tqdm is loaded: a log line printed
    while progress bars are shown lands above them instead of inside one. Before any bar (tqdm not imported)
    lines go straight to the stream, so a verb without bars never pays for importing tqdm."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, self._pending = self._pending.rsplit("\n", 1)
            tqdm = sys.modules.get("tqdm")
            if tqdm is None:
                self.stream.write(lines + "\n")
            else:
                tqdm.tqdm.write(lines, file=self.stream)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return True


def log_level(level: str, terminal: bool, verbose: bool | None) -> int:
    """The level a process logs at: `level` ([logging] level) for a service (verbose None) and off a terminal;
    a one-shot verb at a terminal shows TERMINAL_LEVEL and up, or INFO and up when verbose."""
    numeric: int = getattr(logging, level.upper())
    if verbose is None or not terminal:
        return numeric
    return min(numeric, logging.INFO) if verbose else max(numeric, TERMINAL_LEVEL)


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None,
                      verbose: bool | None = None) -> None:
    """Log to `stream` (stdout by default) at `level`: JSON lines ("json", or "auto" off a terminal) or
    coloured console lines. Library logging, Python warnings and thread-ending exceptions go the same way.
    `verbose` is None for a service; for a one-shot verb it says whether -v/--verbose was given, which matters
    only at a terminal (log_level). Safe to call again (a config reload)."""
    stream = stream or sys.stdout
    terminal = stream.isatty()
    as_json = fmt == "json" or (fmt == "auto" and not terminal)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        tail: list[Any] = [TRACEBACKS, redact_secrets, structlog.processors.JSONRenderer()]
    else:
        tail = [structlog.processors.format_exc_info, redact_secrets, escape_controls,
                structlog.dev.ConsoleRenderer(colors=True)]
    numeric = log_level(level, terminal, verbose)
    if terminal and verbose is not None:
        stream = _AboveBars(stream)  # type: ignore[assignment]  # write, flush and isatty are all a logger uses
    structlog.configure(
        processors=shared + tail,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(numeric, stream, tail, shared)
    warnings.showwarning = _show_warning
    threading.excepthook = _thread_excepthook
    quiet_opencv()


def quiet_opencv() -> None:
    """OpenCV writes nothing of its own to stderr (OPENCV_LOG_LEVEL): read when cv2 is imported, so it is set in the
    environment before that (cv2 is a heavy import: never made here); where cv2 is loaded already, set in it too."""
    if "OPENCV_LOG_LEVEL" in os.environ and os.environ["OPENCV_LOG_LEVEL"] != OPENCV_LOG_LEVEL:
        return  # the user's own choice
    os.environ["OPENCV_LOG_LEVEL"] = OPENCV_LOG_LEVEL
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.utils.logging.setLogLevel(getattr(cv2.utils.logging, f"LOG_LEVEL_{OPENCV_LOG_LEVEL}"))


# structlog's method names and the levels they log at.
_METHOD_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
                  "error": logging.ERROR, "exception": logging.ERROR, "critical": logging.CRITICAL,
                  "fatal": logging.CRITICAL}


class _Hold(logging.Filter):
    """On the root logger's handler: hands a library's warnings and errors to reported_by's `say`, writes nothing."""

    def __init__(self, say: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.say = say

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.say(redact_secrets(None, "", {"event": record.getMessage(), "logger": record.name,
                                               "level": record.levelname.lower()}))
        return False


@contextmanager
def reported_by(say: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Within it nothing is logged: each warning or error (ours, a library's, a Python warning) is handed to `say`
    as its event dict (with its "level", secrets redacted), for a verb whose report says them itself
    (`facesetd doctor`), where they happen. INFO and DEBUG lines are dropped."""

    def hold(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if _METHOD_LEVELS.get(method, logging.INFO) >= logging.WARNING:
            event_dict.setdefault("level", "error" if method == "exception" else method)
            say(redact_secrets(None, method, dict(event_dict)))
        raise structlog.DropEvent

    processors = structlog.get_config()["processors"]
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, _OurHandler)]
    stdlib = _Hold(say)
    structlog.configure(processors=[hold, *processors])
    for h in handlers:
        h.addFilter(stdlib)
    try:
        yield
    finally:
        structlog.configure(processors=processors)
        for h in handlers:
            h.removeFilter(stdlib)
