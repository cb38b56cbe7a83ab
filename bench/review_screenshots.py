"""Refresh the review pages' screenshots that docs/review.md shows (docs/review/*.png, 1280x800), on purpose.

    python bench/review_screenshots.py

The screenshots are taken by the review pages' own Chromium tests (tests/test_review_pages.py and, the
candidates page, tests/test_review_actions.py), on corpora the real daemon makes from ../shared/faces. A plain
test run writes them to a temporary folder, so running the suite changes no tracked file; this script runs those
two tests with FACESETD_TEST_SCREENSHOTS=docs/review (and Debian's chromium required, not skipped), then lists
what changed for a `git add docs/review`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "review"
TESTS = ["tests/test_review_pages.py::test_review_pages_in_chromium",
         "tests/test_review_actions.py::test_actions_on_the_review_pages"]


def main() -> int:
    env = {**os.environ, "FACESETD_TEST_SCREENSHOTS": str(SHOTS), "FACESETD_TEST_REQUIRE_CHROMIUM": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *TESTS], cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        print("the review tests failed; docs/review/ may hold some new screenshots (git checkout docs/review)",
              file=sys.stderr)
        return done.returncode
    subprocess.run(["git", "status", "--short", "--", str(SHOTS)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
