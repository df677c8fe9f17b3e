"""gRPC bearer tokens on a real grpc.aio server over 127.0.0.1: UNAUTHENTICATED, PERMISSION_DENIED,
open health methods, a closed repository API, for unary and streaming methods alike; TLS credentials
from the same certificate files as REST."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import grpc
import pytest

from runtime.auth import Scope, read_tokens
from runtime.grpc_auth import SERVICE, AuthInterceptor, method_scope
from runtime.tls import TLSConfigError, grpc_credentials
from tests.runtime.test_tls import make_certificate

INFER = "grpc-infer-token-7f3a9c21"
ADMIN = "grpc-admin-token-0d4e8b56"


def _echo_service() -> grpc.GenericRpcHandler:
    """Stand-ins for the service's methods: bytes in, the method name back (the interceptor is under test)."""

    def unary(name: str):
        async def call(request: bytes, context) -> bytes:
            return name.encode()

        return grpc.unary_unary_rpc_method_handler(call)

    async def stream(request, context):
        for part in (b"a", b"b"):
            yield b"ModelStreamInfer:" + request + part

    handlers = {m: unary(m) for m in ("ServerLive", "ModelReady", "ModelInfer", "ModelMetadata", "RepositoryIndex")}
    # Server streaming: a client-streaming call denied while the client still writes its request stream
    # ends on the client as INTERNAL ("Internal error from Core") about one time in five, a race in the
    # grpc client rather than the interceptor (the server sends UNAUTHENTICATED either way); modelport
    # serves no client-streaming RPC.
    handlers["ModelStreamInfer"] = grpc.unary_stream_rpc_method_handler(stream)
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def _scenario(tmp_path: Path, admin_enabled: bool) -> dict[str, object]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{INFER} infer\n{ADMIN} admin\n")
    os.chmod(tokens, 0o600)
    table = read_tokens(tokens)
    server = grpc.aio.server(interceptors=[AuthInterceptor(table, admin_enabled)])
    server.add_generic_rpc_handlers((_echo_service(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    results: dict[str, object] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

            async def call(method: str, token: str | None, scheme: str = "Bearer") -> object:
                metadata = (("authorization", f"{scheme} {token}"),) if token else ()
                try:
                    return await channel.unary_unary(f"/{SERVICE}/{method}")(b"x", metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return (exc.code(), exc.details())

            results["live, no token"] = await call("ServerLive", None)
            results["ready, no token"] = await call("ModelReady", None)
            results["infer, no token"] = await call("ModelInfer", None)
            results["infer, wrong token"] = await call("ModelInfer", "not-a-token-0000000000")
            results["infer, lower-case scheme"] = await call("ModelInfer", INFER, "bearer")
            results["metadata, admin token"] = await call("ModelMetadata", ADMIN)
            results["index, infer token"] = await call("RepositoryIndex", INFER)
            results["index, admin token"] = await call("RepositoryIndex", ADMIN)

            async def stream(token: str | None) -> object:
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                try:
                    rpc = channel.unary_stream(f"/{SERVICE}/ModelStreamInfer")(b"x", metadata=metadata, timeout=10)
                    return [reply async for reply in rpc]
                except grpc.aio.AioRpcError as exc:
                    return (exc.code(), exc.details())

            results["stream, no token"] = await stream(None)
            results["stream, infer token"] = await stream(INFER)
    finally:
        await server.stop(None)
    return results


def test_grpc_tokens_and_scopes(tmp_path):
    results = asyncio.run(_scenario(tmp_path, admin_enabled=True))
    assert results["live, no token"] == b"ServerLive" and results["ready, no token"] == b"ModelReady"
    assert results["infer, no token"][0] == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[index]
    assert "bearer token" in results["infer, no token"][1]  # type: ignore[index]
    assert results["infer, wrong token"][0] == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[index]
    assert results["infer, lower-case scheme"] == b"ModelInfer"
    assert results["metadata, admin token"] == b"ModelMetadata"
    denied = results["index, infer token"]
    assert denied[0] == grpc.StatusCode.PERMISSION_DENIED and "'admin' scope" in denied[1]  # type: ignore[index]
    assert INFER not in denied[1]  # type: ignore[index]
    assert results["index, admin token"] == b"RepositoryIndex"
    assert results["stream, no token"][0] == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[index]
    assert results["stream, infer token"] == [b"ModelStreamInfer:xa", b"ModelStreamInfer:xb"]


def test_grpc_repository_closed_without_admin(tmp_path):
    results = asyncio.run(_scenario(tmp_path, admin_enabled=False))
    closed = results["index, admin token"]
    assert closed[0] == grpc.StatusCode.PERMISSION_DENIED and "repository API is off" in closed[1]  # type: ignore[index]
    assert results["infer, lower-case scheme"] == b"ModelInfer"


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("/inference.GRPCInferenceService/ServerReady", Scope.OPEN),
        ("/inference.GRPCInferenceService/ModelInfer", Scope.INFER),
        ("/inference.GRPCInferenceService/ServerMetadata", Scope.INFER),
        ("/inference.GRPCInferenceService/RepositoryModelLoad", Scope.ADMIN),
        ("/inference.GRPCInferenceService/SomethingNew", Scope.INFER),
        ("/other.Service/ServerLive", Scope.INFER),
        ("/grpc.health.v1.Health/Check", Scope.OPEN),  # Kubernetes gRPC probes send no token
        ("/grpc.health.v1.Health/Watch", Scope.OPEN),
    ],
)
def test_method_scopes(method, scope):
    assert method_scope(method) is scope


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command (.ci/run installs it)")
def test_grpc_tls_credentials_from_the_same_files(tmp_path):
    cert, key = make_certificate(tmp_path)

    async def scenario() -> bytes:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_echo_service(),))
        port = server.add_secure_port("127.0.0.1:0", grpc_credentials(cert, key))
        await server.start()
        try:
            credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
                return await channel.unary_unary(f"/{SERVICE}/ServerLive")(b"x", timeout=10)
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) == b"ServerLive"
    with pytest.raises(TLSConfigError, match="cannot use them"):
        grpc_credentials(cert, cert)
