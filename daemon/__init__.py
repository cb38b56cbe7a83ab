"""The resident process: CLI, watchers, scheduler, inbox routing, Immich polling."""

from state import VERSION as __version__

__all__ = ["__version__"]
