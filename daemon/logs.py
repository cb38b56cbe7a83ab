"""structlog setup: JSON lines off a terminal (journald-friendly), coloured lines on one; secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog

from state.names import escape

# Keys whose values are secrets wherever they appear in an event dict.
SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password|authorization|x-api-key|cookie)", re.I)
# Secrets that might be embedded in free text (exception messages, URLs, headers).
SECRET_TEXT = [
    re.compile(r"(?i)(x-api-key|authorization|api[_-]?key|token|apikey)([\"']?\s*[:=]\s*[\"']?)(bearer\s+)?([^\s\"',&}]+)"),
]
REDACTED = "[redacted]"

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


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        tail: list[Any] = [structlog.processors.dict_tracebacks, redact_secrets, structlog.processors.JSONRenderer()]
    else:
        tail = [structlog.processors.format_exc_info, redact_secrets, structlog.dev.ConsoleRenderer(colors=True)]
    structlog.configure(
        processors=shared + tail,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
