"""`facesetd config`: print the effective configuration (or the documented defaults) as TOML."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "config"
HELP = ("print the effective configuration as commented TOML (--defaults: the built-in defaults); the face pack's"
        " distances say where their value comes from (a file, a variable, or the pack's measured defaults)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--defaults", action="store_true", help="print the defaults (what config.toml documents)")
    p.add_argument("--reference", action="store_true", help="print the Markdown reference (docs/configuration.md)")


def run(args: argparse.Namespace, app: Any) -> int:
    # Here, not at the top: daemon.config_toml brings daemon.config (and through it gpu_agent and numpy),
    # which building the parser for `--help` and the other verbs does not need.
    from daemon.config import identity_origins
    from daemon.config_toml import render, render_reference

    if args.reference:
        print(render_reference(), end="")
    elif args.defaults:
        print(render(), end="")
    else:
        origins = identity_origins(app.config_path, data_dir=str(app.config.data_dir))
        print(render(app.config, {"identity": origins}), end="")
    return 0
