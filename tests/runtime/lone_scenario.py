"""The in-process scenario of tests/runtime/test_lone.py, run by the serve environment's Python in a process of its
own: the server's generated protobuf module and tritonclient's copy of the same messages (imported by other tests)
cannot share one process. ``python -m tests.runtime.lone_scenario REPOSITORY`` prints JSON:
``{"runs": [[on the loop thread, requests in progress], ...], "in_progress_after": N}``."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from pathlib import Path

import aiohttp
import grpc
import numpy as np
from aiohttp import web

from runtime.app import create_app
from runtime.grpc_server import GrpcServer
from runtime.handlers.common import ADMIN_ENABLED, DATAPLANE, STATE, TOKENS
from runtime.proto import grpc_predict_v2_pb2 as pb
from runtime.settings import parse_settings

X = np.arange(4, dtype=np.float32).reshape(1, 4)


def free_port() -> int:  # tests/support/server.py's needs requests, which the serve environment has not
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def scenario(repository: Path) -> dict:
    """One REST and one gRPC request alone, then one of each with another request counted as in progress."""
    port, grpc_port = free_port(), free_port()
    settings = parse_settings(["--repository", str(repository), "--port", str(port), "--grpc-port", str(grpc_port)])
    app = create_app(settings)
    state = app[STATE]
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    grpc_server = GrpcServer(state, app[DATAPLANE], app[TOKENS], app[ADMIN_ENABLED])
    await grpc_server.start()
    loop_thread = threading.get_ident()
    runs: list[list] = []
    try:
        while not state.ready():
            await asyncio.sleep(0.05)
        engine = app[DATAPLANE].model("slow").engine
        predict = engine.predict

        def recorded(inputs, outputs=None):
            runs.append([threading.get_ident() == loop_thread, state.in_progress])
            return predict(inputs, outputs)

        engine.predict = recorded
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X.ravel().tolist()}]}
        url = f"http://127.0.0.1:{port}/v2/models/slow/infer"
        request = pb.ModelInferRequest(model_name="slow", raw_input_contents=[X.tobytes()])
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        async with aiohttp.ClientSession() as session, grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            for other in (0, 1):  # alone, then with another request counted as in progress
                state.in_progress += other
                try:
                    async with session.post(url, json=body) as response:
                        assert response.status == 200, await response.text()
                        assert (await response.json())["outputs"][0]["data"] == X.ravel().tolist()
                    answer = await infer(request)
                    assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == X.ravel().tolist()
                finally:
                    state.in_progress -= other
        return {"runs": runs, "in_progress_after": state.in_progress}
    finally:
        await grpc_server.stop(0)
        await runner.cleanup()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(Path(sys.argv[1])))))
