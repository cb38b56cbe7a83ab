"""What can go wrong talking to Immich, as typed errors whose messages name the server, never the key."""

from __future__ import annotations

from state.errors import FacesetdError


class ImmichError(FacesetdError):
    """Something went wrong talking to Immich; the message names the server, never the key."""


class ImmichAuthError(ImmichError):
    """401: the key is missing, unknown or revoked."""


class ImmichPermissionError(ImmichError):
    """403: the key lacks a permission the call needs."""


class ImmichUnavailable(ImmichError):
    """The server did not answer (connection error, deadline passed, 5xx) after the retries."""


class ImmichNotFound(ImmichError):
    """The asset is gone (404, or Immich's 400 "Not found or no asset.read access")."""


class ImmichRequestError(ImmichError):
    """Any other 4xx: a bug on our side or an API change; not retried."""


class ImmichMalformed(ImmichError):
    """An answer that is not what Immich's spec says it is (not JSON, a list for an object, a face box of "x")."""


class ImmichTooLarge(ImmichError):
    """An original over [limits] max_file_bytes, refused from its headers or abandoned while it streamed."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size  # bytes: the size the server declared, or what had arrived when the download was abandoned


class ImmichCancelled(ImmichError):
    """The daemon is stopping: the request was cut off (or not started); nothing is wrong with the server."""
