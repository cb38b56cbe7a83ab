"""Errors from the models layer. Each message is one line a user can act on; the CLI prints it and exits 1."""

from __future__ import annotations


class ModelError(Exception):
    """A model problem the user can fix (missing files, bad checksum, agent down)."""


class ModelsUnavailable(ModelError):
    """The models cannot be used right now (missing, corrupt, agent down or refusing): a daemon waits and
    tries again; the work that needed them stays pending."""


class ModelNotFound(ModelsUnavailable):
    """A model pack or exported model is not where the config says it is."""


class ChecksumMismatch(ModelsUnavailable):
    """A downloaded or installed model file does not have the pinned sha256."""


class FetchFailed(ModelError):
    """Neither insightface's model zoo nor the PyPI route could provide a pack."""


class ImageDecodeError(ModelError):
    """Bytes that are not an image any installed decoder can read."""


class ImageTooLarge(ImageDecodeError):
    """An image whose header claims more pixels than the limit: refused before decoding (a decompression bomb)."""

    def __init__(self, message: str, *, width: int = 0, height: int = 0, pixels: int = 0, max_pixels: int = 0) -> None:
        super().__init__(message)
        self.width, self.height, self.pixels, self.max_pixels = width, height, pixels, max_pixels


class AgentUnavailable(ModelsUnavailable):
    """The loopback gpu agent does not answer (not started, crashed, wrong URL)."""


class AgentAuthError(ModelsUnavailable):
    """The gpu agent refused the bearer token (401)."""


class AgentProtocolError(ModelError):
    """The gpu agent answered with something other than what the client expects."""
