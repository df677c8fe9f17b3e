"""The ceiling of Python gRPC on this machine: a ``grpc.aio`` server with no model.

``python noop_grpc.py PORT RESPONSE_FILE`` answers every ``inference.GRPCInferenceService/ModelInfer`` with
the canned, pre-serialized response in RESPONSE_FILE, without parsing the request: what is left is grpc.aio's
own cost per call (HTTP/2 framing, the event loop, one Python coroutine per call).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc


async def main(port: int, response: bytes) -> None:
    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return response

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(infer)  # no serializers: bytes in, bytes out
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]).read_bytes()))
