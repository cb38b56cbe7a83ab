"""The Jinja2 templates (daemon/review/templates), shared by the server and the static report."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from .links import Links

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}f}"
    return env


def render(template: str, context: dict[str, Any], links: Links, **extra: Any) -> str:
    """One page: the page's context, its links, and what every page shows (the nav, the log position)."""
    values = {"links": links, "live": links.live, "actions": False, "csrf": "", "msg": "", "error": "",
              "head": 0, "here": "", **context, **extra}
    return environment().get_template(template).render(values)
