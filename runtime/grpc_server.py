"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``grpc.aio``.

It runs in the REST server's process and event loop (``runtime/server.py`` starts it) and is an
adapter over the same ``DataPlane``: the same model lookup, validation, limits, batching, metrics and
access log as REST. What is gRPC's own:

- every RPC goes through ``_Rpc``, which parses the request bytes itself (a malformed message is
  INVALID_ARGUMENT, not grpc's generic INTERNAL), maps ``ModelportError`` to a status with
  ``error.grpc_code`` (the one mapping, next to the HTTP one in ``runtime/errors.py``) and writes the
  access log line;
- the client's deadline becomes the request's deadline (the earlier of it and ``--request-timeout``);
- the maximum message size is the REST body limit (``--max-body-mb``);
- the standard health service (``grpc.health.v1.Health``) answers SERVING exactly when REST readiness
  does, so Kubernetes gRPC probes work; shutdown drains in-flight calls within ``--shutdown-grace``;
- with ``--auth-tokens-file`` the RPCs need the same bearer token as their REST twins
  (``runtime/grpc_auth.py``: metadata ``authorization: Bearer TOKEN``; liveness, readiness and the
  health service stay open), and with ``--tls-cert`` gRPC is served over TLS with the same certificate;
- with ``--workers N`` every worker serves gRPC on the same port (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from runtime import workers
from runtime.auth import Scope, TokenTable
from runtime.codecs import v2_grpc
from runtime.dataplane import DataPlane
from runtime.errors import ModelportError
from runtime.grpc_auth import METHOD_SCOPES, AuthInterceptor, closed_repository
from runtime.proto import grpc_predict_v2_pb2 as pb
from runtime.state import Phase, ServerState
from runtime.tls import grpc_credentials

log = logging.getLogger("runtime")

SERVICE = "inference.GRPCInferenceService"


class InferenceService:
    """The six V2 RPCs and Triton's three repository RPCs, each a few lines over the data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.settings = dataplane.state.settings

    async def ServerLive(self, request: pb.ServerLiveRequest, call: CallInfo) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, call: CallInfo) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, call: CallInfo) -> pb.ModelReadyResponse:
        call.model = request.name
        return pb.ModelReadyResponse(ready=self.dataplane.model_status(request.name, request.version).ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, call: CallInfo) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, call: CallInfo) -> pb.ModelMetadataResponse:
        call.model = request.name
        return pb.ModelMetadataResponse(**self.dataplane.model_metadata(request.name, request.version).as_dict())

    async def ModelInfer(self, request: pb.ModelInferRequest, call: CallInfo) -> bytes:
        call.model = request.model_name
        version = request.model_version or None
        model = self.dataplane.model(request.model_name, version)
        decoded, raw = v2_grpc.decode_request(request, self.settings.max_elements)
        response = self.dataplane.infer_now(model, decoded, started=call.started) or await self.dataplane.infer(
            model, decoded, started=call.started, deadline=call.deadline, version=version
        )
        return v2_grpc.encode_response(response, raw)

    # Triton's model repository extension (the admin scope: runtime/grpc_auth.py)
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, call: CallInfo) -> pb.RepositoryIndexResponse:
        rows = self.dataplane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, call: CallInfo
    ) -> pb.RepositoryModelLoadResponse:
        call.model = request.model_name
        await self.dataplane.repository_load(request.model_name, list(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, call: CallInfo
    ) -> pb.RepositoryModelUnloadResponse:
        call.model = request.model_name
        await self.dataplane.repository_unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


class CallInfo:
    """Per-call facts the RPCs and the access log share."""

    __slots__ = ("deadline", "model", "started")

    def __init__(self, started: float, deadline: float | None) -> None:
        self.started = started
        self.deadline = deadline
        self.model = "-"


RPCS: dict[str, type] = {  # RPC -> its request message
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelInfer": pb.ModelInferRequest,
    "RepositoryIndex": pb.RepositoryIndexRequest,
    "RepositoryModelLoad": pb.RepositoryModelLoadRequest,
    "RepositoryModelUnload": pb.RepositoryModelUnloadRequest,
}


class _Rpc:
    """One unary RPC on raw bytes: parse, run, map errors to a status (the one place), log."""

    def __init__(
        self, name: str, message: type, method: Callable[..., Awaitable[Any]], timeout: float, state: ServerState
    ) -> None:
        self.name = name
        self.path = f"/{SERVICE}/{name}"
        self.message = message
        self.method = method
        self.timeout = timeout  # --request-timeout; 0: none
        self.state = state  # counts the call in progress (``ServerState.in_progress``)

    async def __call__(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        # the request's deadline: the earlier of the client's and --request-timeout, in loop.time()
        remaining = context.time_remaining()
        if self.timeout > 0:
            remaining = self.timeout if remaining is None else min(remaining, self.timeout)
        call = CallInfo(started, None if remaining is None else asyncio.get_running_loop().time() + remaining)
        code = grpc.StatusCode.OK
        state = self.state
        state.in_progress += 1
        try:
            try:
                request = self.message.FromString(body)
            except DecodeError as exc:
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, f"the request is not a valid {self.message.__name__} message: {exc}")
            response = await self.method(request, call)
            # ModelInfer serializes its own answer (codecs/v2_grpc.py); the others return messages
            return response if type(response) is bytes else response.SerializeToString()
        except ModelportError as exc:
            code = grpc.StatusCode[exc.grpc_code]
            if exc.headers.get("Retry-After"):
                context.set_trailing_metadata((("retry-after", exc.headers["Retry-After"]),))
            await context.abort(code, str(exc))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away or its deadline passed
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in gRPC %s", self.name)
            await context.abort(code, "internal server error (see the server log)")
        finally:
            state.answered("GRPC", self.path, call.model, code.name, started)
        raise AssertionError("unreachable: context.abort raises")


def _handler(service: InferenceService, timeout: float, admin_enabled: bool) -> grpc.GenericRpcHandler:
    methods = {}
    for name, message in RPCS.items():
        # grpc.aio tells coroutine handlers apart with inspect.iscoroutinefunction: hand it the bound method
        rpc = _Rpc(name, message, getattr(service, name), timeout, service.dataplane.state)
        handler = grpc.unary_unary_rpc_method_handler(rpc.__call__)
        if METHOD_SCOPES.get(name) is Scope.ADMIN and not admin_enabled:
            handler = closed_repository(handler, name)
        methods[name] = handler
    return grpc.method_handlers_generic_handler(SERVICE, methods)


class GrpcServer:
    """The ``grpc.aio`` server and its health service, bound to the state's lifecycle."""

    def __init__(self, state: ServerState, dataplane: DataPlane, tokens: TokenTable, admin_enabled: bool) -> None:
        settings = state.settings
        self.state = state
        self.settings = settings
        limit = settings.max_body_bytes
        self.server = grpc.aio.server(
            # only with tokens: an interceptor is one more coroutine on every call (runtime/grpc_auth.py)
            interceptors=[AuthInterceptor(tokens, admin_enabled)] if tokens.enabled else None,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # --workers N: every worker binds the port and the kernel spreads connections over them;
                # otherwise a second server on the same port must fail, not silently share it
                ("grpc.so_reuseport", 1 if workers.is_worker() else 0),
            ],
        )
        service = InferenceService(dataplane)
        self.server.add_generic_rpc_handlers((_handler(service, settings.request_timeout, admin_enabled),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._pending: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Listen on --host:--grpc-port; raises OSError when the port cannot be bound."""
        settings = self.settings
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            if settings.tls_cert and settings.tls_key:
                bound = self.server.add_secure_port(address, grpc_credentials(settings.tls_cert, settings.tls_key))
            else:
                bound = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc raises this when the address is taken
            raise OSError(str(exc)) from None
        if bound == 0:
            raise OSError(f"cannot bind {address}")
        await self.server.start()
        self.state.subscribe(self._on_phase)

    def _on_phase(self, phase: Phase) -> None:
        ready = phase is Phase.READY and self.state.ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE):
            task = asyncio.get_running_loop().create_task(self.health.set(service, status))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def stop(self, grace: float) -> None:
        """Refuse new calls at once; in-flight calls get ``grace`` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
