"""Errors a user can act on. The CLI prints them as one line and exits 1; anything else is a bug (exit 2)."""

from __future__ import annotations


class FacesetdError(Exception):
    """An error the user can act on. Its message is one clear line."""


class ConfigError(FacesetdError):
    """A bad configuration key, type or path; the message names the key."""


class LogError(FacesetdError):
    """The event log cannot be opened or is of an unknown schema."""


class UnknownEvent(FacesetdError):
    """An event id that is not in the log, or that cannot be undone."""
