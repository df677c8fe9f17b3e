"""One exception hierarchy for the runtime, mapped to HTTP statuses here and nowhere else.

Handlers, codecs and engines raise these; a single middleware turns them into a V2 error body
``{"error": "..."}`` with ``status``. Anything else that escapes is a bug: it becomes a 500 with a
generic message (the traceback goes to the log, never to the client).
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base class: ``status`` is the HTTP status, ``str(exc)`` the message the client sees."""

    status = 500
    headers: dict[str, str] = {}


class BadRequest(ModelportError):
    """The request is malformed or does not match the model's inputs."""

    status = 400


class NotFound(ModelportError):
    """Unknown model, version or route."""

    status = 404


class PayloadTooLarge(ModelportError):
    status = 413


class UnsupportedMediaType(ModelportError):
    status = 415


class Unavailable(ModelportError):
    """Not ready, or over capacity: the client should retry later."""

    status = 503

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else {}


class DeadlineExceeded(ModelportError):
    status = 504


class ModelLoadError(ModelportError):
    """A model in the repository could not be loaded (missing/corrupt file, bad manifest)."""

    status = 503


class InferenceError(ModelportError):
    """The engine failed on input that passed validation; the message names the model."""

    status = 500
