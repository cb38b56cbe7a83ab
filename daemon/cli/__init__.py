"""`facesetd [--config PATH] [--data-dir DIR] [-v] VERB`: one module per verb, one top-level error handler.

Each verb module defines NAME, HELP, add_arguments(parser) and run(args, app) -> int.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from daemon import __version__
from daemon.cli.printable import printable
from state.errors import FacesetdError

VERB_MODULES = [
    "run",
    "reconcile",
    "backfill",
    "rebuild",
    "status",
    "events",
    "restore",
    "retry",
    "config",
    "models",
    "doctor",
    "gpu_agent",
    "immich",
    "eras",
    "move",
    "label",
    "promote",
    "review",
    "report",
    "calibrate",
]


# The verbs that are services: their log is their output (stdout, journald) at [logging] level, with no -v.
# daemon.app.LOG_TO_STDOUT says the same (not imported here: the parser stays light); a test pins the two.
SERVICES = ("run", "gpu-agent")
VERBOSE_HELP = ("at a terminal, show the INFO log lines too (a command shows only warnings and errors there, above"
                " its progress bars; into a pipe or a file its log is [logging] level, unchanged)")


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [FacesetdError]
    try:
        from gpu_agent.errors import ModelError

        types.append(ModelError)
    except ImportError:  # pragma: no cover - gpu_agent always ships
        pass
    return tuple(types)


def data_folder_use(args: argparse.Namespace) -> str:
    """How a verb uses the data folder: "create" may make it, "read" needs it, "none" works without one."""
    verb = args.verb
    if verb in ("run", "reconcile", "backfill"):
        return "create"
    if verb == "models":
        return "read" if args.models_verb == "list" else "create"  # fetch and export-clip write models/
    if verb == "immich":
        return "create" if args.immich_verb == "poll" else "none"  # `immich check` only asks the server
    if verb == "gpu-agent" or (verb == "config" and (args.defaults or args.reference)):
        return "none"
    return "read"  # status, events, config, doctor, rebuild, restore, move, label, promote: a missing folder is a typo


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistyped command line is a user error like any other: one line after the usage, exit 1.

    A verb module's EPILOG (a function returning the text) is called only when its help is printed, so building
    the parser imports nothing that only the help text needs."""

    lazy_epilog: Callable[[], str] | None = None

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"facesetd: error: {printable(message, keep_newlines=True)}\n")

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog, self.lazy_epilog = self.lazy_epilog(), None
        return super().format_help()


def _add_verbose(p: argparse.ArgumentParser) -> None:
    """-v/--verbose after the verb (and after any subverb) too: `facesetd reconcile -v`, `facesetd models fetch -v`.
    SUPPRESS: given nowhere, the global flag's default (False) stays."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = _Parser(prog="facesetd", description="Keep a person-sorted face corpus clean.")
    parser.add_argument("--version", action="version", version=f"facesetd {__version__}")
    parser.add_argument("--config", type=Path, help="TOML config file (default: none; <data-dir>/facesetd.toml and the built-in defaults)")
    parser.add_argument("--data-dir", help="folder for corpus/, inbox/, state/, models/ and facesetd.toml "
                        "(env FACESETD_DATA_DIR; default ~/.local/share/facesetd)")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    modules: dict[str, object] = {}
    for name in VERB_MODULES:
        module = importlib.import_module(f"daemon.cli.{name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.lazy_epilog = getattr(module, "EPILOG", None)
        module.add_arguments(p)
        if module.NAME not in SERVICES:
            _add_verbose(p)
        modules[module.NAME] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 1
    from daemon.app import App

    try:
        app = App.from_args(args)
        try:
            app.check_data_folder(data_folder_use(args))
            return int(modules[args.verb].run(args, app) or 0)  # type: ignore[attr-defined]
        except sqlite3.DatabaseError as e:  # a damaged page met by any query: a check of the log names it
            from state.logcheck import damage_behind, is_damage

            damaged = damage_behind(app.config.log_path, e) if is_damage(e) else None
            if damaged is None:
                raise
            raise damaged from e
        finally:
            app.close()
    except _user_error_types() as e:
        # The message names files, labels and faces as the user (or the file system) spelt them.
        print(f"facesetd: error: {printable(e, keep_newlines=True)}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))  # 1; a damaged event log: 65 (state/errors.py)
    except KeyboardInterrupt:
        print("facesetd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `facesetd events | head`: the reader has all it wanted
        _quiet_stdout()
        return 0
    except Exception:  # noqa: BLE001 - the one place that turns a bug into exit code 2
        traceback.print_exc()
        print("facesetd: unexpected error (a bug); the traceback is above", file=sys.stderr)
        return 2


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
