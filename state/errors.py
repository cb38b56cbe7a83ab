"""Errors a user can act on. The CLI prints them as one line and exits 1 (a damaged event log: 65); anything else
is a bug (exit 2)."""

from __future__ import annotations


class FacesetdError(Exception):
    """An error the user can act on. Its message is one clear line; the CLI exits with `exit_code`."""

    exit_code = 1


class ConfigError(FacesetdError):
    """A bad configuration key, type or path; the message names the key."""


class LogError(FacesetdError):
    """The event log cannot be opened or is of an unknown schema."""


class UnknownEvent(FacesetdError):
    """An event id that is not in the log, or that cannot be undone."""


# A damaged event log exits with this code (sysexits' EX_DATAERR), not 1: systemd's unit lists it in
# RestartPreventExitStatus=, so a daemon that cannot trust its log stops once instead of restarting in a loop.
EXIT_LOG_DAMAGED = 65


class LogDamaged(LogError):
    """The event log's bytes are damaged (state/logcheck.py names the positions and what is wrong).

    Its message is the one line a person reads; facesetd writes nothing more into such a log."""

    exit_code = EXIT_LOG_DAMAGED
