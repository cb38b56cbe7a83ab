"""The tooling promises: CI runs exactly the README's test command (lint first), and the types of the flow map
catch a check given the wrong kind of event before it ever runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("**Run the tests**", 1)[1]
    return re.search(r"```sh\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command_with_the_lint_before_pytest() -> None:
    command = _readme_test_command()
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    # before it, only the system packages the tests need (Debian's chromium for the review pages' browser tests),
    # and the switch that makes the browser tests fail rather than skip where it is missing
    assert ci[-1] == command
    assert len(ci) <= 3 and all(("apt-get install" in line and "chromium" in line)
                                or line.startswith("export FACESETD_TEST_REQUIRE_CHROMIUM=1") for line in ci[:-1])
    steps = [s.strip() for s in command.split("&&")]
    lint = [".venv/bin/ruff check .", ".venv/bin/mypy --strict state handlers", ".venv/bin/mypy"]
    assert steps[-4:] == [*lint, ".venv/bin/python -m pytest"]
    assert "dev" in steps[1], "the lint needs the dev extra installed"


WRONG_KIND = '''
from collections.abc import Sequence

from handlers.context import HandlerContext
from handlers.registry import Consumer, Stage
from state import events as ev
from state.eventlog import StoredEvent


def check_png_size(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAdded]]) -> list[ev.Event]:
    return [ev.FaceMissing(path=se.event.path) for se in events]


RIGHT = Stage(ev.FaceAdded, consumers=(Consumer(check_png_size, batch=8),))
WRONG = Stage(ev.FaceMissing, consumers=(Consumer(check_png_size, batch=8),))
'''


@pytest.mark.slow
def test_mypy_refuses_a_check_listed_under_another_kind(tmp_path: Path) -> None:
    """A consumer of FaceAdded listed under FaceMissing is a type error naming that line; under FaceAdded it is
    not. (Before Stage and Consumer were generic, both passed and the check ran on events without a sha256.)"""
    module = tmp_path / "toy_flow.py"
    module.write_text(WRONG_KIND)
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
                           str(module)], cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, done.stdout + done.stderr
    wrong_line = WRONG_KIND.splitlines().index(next(x for x in WRONG_KIND.splitlines() if x.startswith("WRONG"))) + 1
    # mypy says it cannot find one kind that both the stage and its consumer take ("type parameter E of Stage").
    assert f"toy_flow.py:{wrong_line}:" in errors[0] and "Stage" in errors[0], errors[0]
