"""One exception hierarchy for the runtime, mapped to HTTP and gRPC statuses here and nowhere else.

The data plane, codecs and engines raise these; REST's middleware turns them into a V2 error body
``{"error": "..."}`` with ``status``, gRPC's call wrapper into ``grpc_code`` (a ``grpc.StatusCode``
name, so this module needs no grpc import) with the same message. Anything else that escapes is a bug:
a 500 / INTERNAL with a generic message (the traceback goes to the log, never to the client).
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base class: ``status`` is the HTTP status, ``str(exc)`` the message the client sees."""

    status = 500
    grpc_code = "INTERNAL"
    headers: dict[str, str] = {}


class BadRequest(ModelportError):
    """The request is malformed or does not match the model's inputs."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ModelportError):
    """Unknown model, version or route."""

    status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ModelportError):
    """Over a limit: body size, elements per tensor, image pixels."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(ModelportError):
    status = 415
    grpc_code = "INVALID_ARGUMENT"


class Unavailable(ModelportError):
    """Not ready, or over capacity: the client should retry later."""

    status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else {}


class DeadlineExceeded(ModelportError):
    status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class ModelLoadError(ModelportError):
    """A model in the repository could not be loaded (missing/corrupt file, bad manifest)."""

    status = 503
    grpc_code = "UNAVAILABLE"


class InferenceError(ModelportError):
    """The engine failed on input that passed validation; the message names the model."""

    status = 500
