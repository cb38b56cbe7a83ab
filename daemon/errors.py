"""User-facing errors (defined in state/, the bottom layer, so every layer can raise them)."""

from state.errors import ConfigError, FacesetdError, LogError, UnknownEvent

__all__ = ["ConfigError", "FacesetdError", "LogError", "UnknownEvent"]
