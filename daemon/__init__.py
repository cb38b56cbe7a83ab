"""The resident process: CLI, watchers, scheduler, inbox routing, Immich polling."""

__version__ = "0.1.0"
