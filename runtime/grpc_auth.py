"""Bearer tokens for gRPC: the tokens file and scopes of ``runtime/auth.py``, read from metadata.

A gRPC client sends the token as the ``authorization`` metadata entry (``Bearer TOKEN``), which is how
``tritonclient.grpc`` passes ``headers={"authorization": ...}``. The interceptor answers, before the
method runs, ``UNAUTHENTICATED`` for a missing or unknown token (REST's 401) and ``PERMISSION_DENIED``
for too small a scope or a closed repository API (REST's 403). The scopes mirror the REST route table:
liveness, readiness and the standard health service (Kubernetes gRPC probes send no token) are open;
Triton's repository RPCs need ``admin``; every other method, including one added later, needs
``infer``. Messages never contain the token.

The server installs the interceptor only when tokens are configured: grpc.aio runs an interceptor as an
extra coroutine on every call. Without tokens the one thing left to refuse is a closed repository API,
and that is decided per method once, when the handlers are registered (``closed_repository``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from runtime.auth import Forbidden, Scope, TokenTable, Unauthorized, authorize

SERVICE = "inference.GRPCInferenceService"  # KServe V2's service name, which Triton extends
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})  # probes: readiness, like ServerReady
METHOD_SCOPES: dict[str, Scope] = {
    "ServerLive": Scope.OPEN,
    "ServerReady": Scope.OPEN,
    "ModelReady": Scope.OPEN,
    "RepositoryIndex": Scope.ADMIN,
    "RepositoryModelLoad": Scope.ADMIN,
    "RepositoryModelUnload": Scope.ADMIN,
}


def method_scope(full_method: str) -> Scope:
    """``/inference.GRPCInferenceService/ModelInfer`` -> the scope it needs (``infer`` when unlisted)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    if service in OPEN_SERVICES:
        return Scope.OPEN
    if service != SERVICE:
        return Scope.INFER
    return METHOD_SCOPES.get(method, Scope.INFER)


def _metadata_value(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        name, value = item
        if name.lower() == key:
            return value if isinstance(value, str) else None
    return None


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only aborts with ``code``."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover  (makes this an async generator, as streaming handlers are)

    kinds = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kinds)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **kinds)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **kinds)
    return grpc.stream_stream_rpc_method_handler(streaming, **kinds)


def closed_repository(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` answering ``PERMISSION_DENIED``: the repository API is off (no admin token configured)."""
    return _deny(
        handler,
        grpc.StatusCode.PERMISSION_DENIED,
        f"{method}: the repository API is off because no admin token is configured "
        "(add a 'TOKEN admin' line to --auth-tokens-file, or pass --allow-unauthenticated-admin)",
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call's ``authorization`` metadata against the scope its method needs.

    ``admin_enabled`` False closes the repository RPCs to everyone (no admin token configured and no
    ``--allow-unauthenticated-admin``), as on REST."""

    def __init__(self, table: TokenTable, admin_enabled: bool) -> None:
        self.table = table
        self.admin_enabled = admin_enabled

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        needed = method_scope(details.method)
        method = details.method.rpartition("/")[2]
        if needed is Scope.ADMIN and not self.admin_enabled:
            return closed_repository(handler, method)
        try:
            authorize(self.table, _metadata_value(details.invocation_metadata, "authorization"), needed, method)
        except Unauthorized as exc:
            return _deny(
                handler, grpc.StatusCode.UNAUTHENTICATED, str(exc).replace("'Authorization:", "'authorization:")
            )
        except Forbidden as exc:
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return handler
