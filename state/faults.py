"""Crash points for the crash tests: a named point where a test can have the process stop dead.

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
