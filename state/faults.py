"""Crash points for the crash tests: a named point where a test can have the process stop dead; fail points for
the error boundary's tests: a named point where one input meets an unexpected error.

With FACESETD_CRASHPOINT=<name>, reaching that point writes <name> to FACESETD_CRASHPOINT_FILE and
then blocks forever, so the test can `kill -9` the process at exactly that moment. Unset (always,
outside tests), `crash_point()` is one dictionary lookup.
"""

from __future__ import annotations

import os
import time


def crash_point(name: str) -> None:
    if os.environ.get("FACESETD_CRASHPOINT") != name:
        return
    marker = os.environ.get("FACESETD_CRASHPOINT_FILE")
    if marker:
        with open(marker, "w") as f:
            f.write(name)
    while True:  # wait for SIGKILL
        time.sleep(3600)


def fail_point(name: str, subject: str) -> None:
    """With FACESETD_FAILPOINT=<name>:<text>, raise an unexpected error when `subject` contains <text>: the error
    boundary's tests (tests/test_error_boundary.py) make one input fail as a bug would. Unset, one lookup."""
    spec = os.environ.get("FACESETD_FAILPOINT")
    if not spec:
        return
    point, _, text = spec.partition(":")
    if point == name and text and text in subject:
        raise RuntimeError(f"injected failure at {name} for {subject} (FACESETD_FAILPOINT)")
