"""The Open Inference Protocol over gRPC: tritonclient.grpc (raw contents), and Triton's own generated
messages and stub (typed contents, hand-made malformed messages), against the live server, bit for bit
against onnxruntime. runtime/proto is not imported here: tritonclient already registers the
``inference`` package in this process's protobuf pool, and using its copy proves wire compatibility."""

from __future__ import annotations

import concurrent.futures
import signal
import struct
import time

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb  # Triton's messages: the same wire contract as ours
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.runtime import models
from tests.runtime.images import by_hand, png
from tests.support.server import run_server

RNG = np.random.default_rng(12)
SLOW_ITERATIONS = 1500  # ~0.7 s per run on one thread of this machine (as in test_lifecycle)
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def client(server):
    with grpcclient.InferenceServerClient(server.grpc_address) as c:
        yield c


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_address) as ch:
        yield ch


def _inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _code(exc: InferenceServerException) -> str:
    return exc.status().removeprefix("StatusCode.")


def test_health_and_metadata_equal_rest(client, server, repository):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1")
    meta = client.get_server_metadata()
    rest = requests.get(f"{server.url}/v2", timeout=5).json()
    assert (meta.name, meta.version, list(meta.extensions)) == (rest["name"], rest["version"], rest["extensions"])
    for model in sorted(p.name for p in repository.iterdir() if p.is_dir()):
        got = client.get_model_metadata(model)
        want = requests.get(f"{server.url}/v2/models/{model}", timeout=5).json()

        def tensors(specs) -> list[dict]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

        assert {
            "name": got.name,
            "versions": list(got.versions),
            "platform": got.platform,
            "inputs": tensors(got.inputs),
            "outputs": tensors(got.outputs),
        } == want, model


def test_standard_health_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_mlp_bit_for_bit_with_id_and_version(client, reference):
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    result = client.infer("mlp", _inputs({"x": x}), request_id="req-9", model_version="1")
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-9", "mlp", "1")
    got = result.as_numpy("probs")
    assert got.dtype == np.float32 and got.shape == (5, 3)
    assert got.tobytes() == reference("mlp", {"x": x}, version="1")["probs"].tobytes()


def test_every_datatype_bit_for_bit(client, reference):
    feed = {
        "i64": RNG.integers(-(2**40), 2**40, (3, 2), dtype=np.int64),
        "i32": RNG.integers(-(2**20), 2**20, (3, 2), dtype=np.int32),
        "flag": RNG.integers(0, 2, (3, 2)).astype(bool),
        "half": RNG.standard_normal((3, 2)).astype(np.float16),
        "u8": RNG.integers(0, 256, (3, 2), dtype=np.uint8),
        "text": np.array([["a", "béta"], ["", "x" * 300], ["7", "zz"]], dtype=object),
    }
    want = reference("types", feed)
    send = dict(feed, text=np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(feed["text"]))
    result = client.infer("types", _inputs(send))
    for name, expected in want.items():
        got = result.as_numpy(name)
        if name == "text_out":
            assert [b.decode("utf-8") for b in got.ravel()] == list(expected.ravel()), name
        else:
            assert got.dtype == expected.dtype and got.shape == expected.shape, name
            assert got.tobytes() == expected.tobytes(), name


def test_output_selection_order_and_image_bytes(client, reference):
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal((2, 3)).astype(np.float32)
    want = reference("two_io", {"a": a, "b": b})
    names = list(want)[::-1]
    result = client.infer(
        "two_io", _inputs({"a": a, "b": b}), outputs=[grpcclient.InferRequestedOutput(n) for n in names]
    )
    assert [o.name for o in result.get_response().outputs] == names
    for name in names:
        assert result.as_numpy(name).tobytes() == want[name].tobytes()

    data = png(RNG.integers(0, 256, (11, 13, 3), dtype=np.uint8))
    result = client.infer("cnn", _inputs({"image": np.array([data], dtype=object)}))
    assert result.as_numpy("probs").tobytes() == reference("cnn", {"image": by_hand(data, "cnn")})["probs"].tobytes()


def _typed_request(model: str, **tensors: tuple[str, list[int], str, list]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="typed")
    for name, (datatype, shape, field, values) in tensors.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(tensor.contents, field).extend(values)
    return request


def test_typed_contents_in_typed_contents_out(channel, reference):
    """Typed ``contents`` (no raw): the answer comes back typed, bit for bit."""
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    reply = stub.ModelInfer(_typed_request("mlp", x=("FP32", [2, 4], "fp32_contents", x.ravel().tolist())), timeout=10)
    assert reply.id == "typed" and not reply.raw_output_contents
    got = np.array(reply.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(list(reply.outputs[0].shape))
    assert got.tobytes() == reference("mlp", {"x": x}, version="2")["probs"].tobytes()


def _status(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_error_statuses(client, channel):
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", _inputs({"x": x}))
    assert _code(caught.value) == "NOT_FOUND" and "unknown model 'nope'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mlp", _inputs({"y": x}))
    assert _code(caught.value) == "INVALID_ARGUMENT" and "no input 'y'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mlp", _inputs({"x": x.astype(np.float64)}))
    assert _code(caught.value) == "INVALID_ARGUMENT" and "is FP32" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mlp", _inputs({"x": x}), outputs=[grpcclient.InferRequestedOutput("nope")])
    assert _code(caught.value) == "INVALID_ARGUMENT" and "no output 'nope'" in caught.value.message()

    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    huge = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b""])
    huge.inputs.add(name="x", datatype="FP32", shape=[10**8, 4])
    code, details = _status(lambda: stub.ModelInfer(huge, timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-elements" in details
    half = _typed_request("types", half=("FP16", [1, 2], "fp32_contents", [1.0, 2.0]))
    code, details = _status(lambda: stub.ModelInfer(half, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in details
    wide = _typed_request("types", i32=("INT32", [1, 2], "int64_contents", [1, 2]))
    code, details = _status(lambda: stub.ModelInfer(wide, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "int_contents has 0" in details
    u8 = _typed_request("types", u8=("UINT8", [1, 2], "uint_contents", [1, 300]))
    code, details = _status(lambda: stub.ModelInfer(u8, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "out of UINT8 range" in details


def _raw_call(channel, body: bytes):
    return channel.unary_unary(INFER)(body, timeout=10)


def test_malformed_messages_are_invalid_argument(channel, server):
    """Never a crash: the server answers each with INVALID_ARGUMENT and keeps serving."""
    code, details = _status(lambda: _raw_call(channel, b"\x0a\xff\xff\xff\xff\x0f"))  # truncated field 1
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid ModelInferRequest" in details

    short = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\x00" * 15])
    short.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    code, details = _status(lambda: _raw_call(channel, short.SerializeToString()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs 16 bytes" in details

    bad_prefix = pb.ModelInferRequest(model_name="types", raw_input_contents=[struct.pack("<I", 1000) + b"abc"])
    bad_prefix.inputs.add(name="text", datatype="BYTES", shape=[1, 1])
    code, details = _status(lambda: _raw_call(channel, bad_prefix.SerializeToString()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "runs past" in details

    for shape in ([-1, 4], [-2, -2]):  # a negative dimension, also where the element count comes out positive
        negative = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\x00" * 16])
        negative.inputs.add(name="x", datatype="FP32", shape=shape)
        code, details = _status(lambda message=negative: _raw_call(channel, message.SerializeToString()))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "negative dimension" in details, details

    count = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"", b""])
    count.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    code, details = _status(lambda: _raw_call(channel, count.SerializeToString()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "2 entries for 1 inputs" in details
    assert requests.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200


def test_metrics_and_access_log(client, server):
    def successes() -> float:
        text = requests.get(f"{server.url}/metrics", timeout=5).text
        prefix = 'nv_inference_request_success{model="fixed"'
        line = next(row for row in text.splitlines() if row.startswith(prefix))
        return float(line.split()[-1])

    before = successes()
    client.infer("fixed", _inputs({"x": np.ones((2, 2), np.float32)}))
    assert successes() == before + 1
    time.sleep(0.2)
    assert f"GRPC {INFER} model=fixed status=OK" in server.log()


def _post_slow(address: str, timeout: float | None = None):
    with grpcclient.InferenceServerClient(address) as c:
        return c.infer("slow", _inputs({"x": np.full((1, 4), 0.5, np.float32)}), client_timeout=timeout)


def test_deadline_overload_and_shutdown_with_calls_in_flight(tmp_path):
    models.save(tmp_path, "slow", models.slow(SLOW_ITERATIONS))
    args = ("--intra-op-threads", "1", "--max-queue", "1", "--request-timeout", "30")
    with run_server(tmp_path, *args) as server:
        started = time.perf_counter()
        _post_slow(server.grpc_address)
        run_seconds = time.perf_counter() - started

        with pytest.raises(InferenceServerException) as caught:
            _post_slow(server.grpc_address, timeout=run_seconds / 4)
        assert _code(caught.value) == "DEADLINE_EXCEEDED"
        time.sleep(run_seconds)

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(_post_slow, server.grpc_address) for _ in range(6)]
            codes = []
            for f in futures:
                try:
                    f.result()
                    codes.append("OK")
                except InferenceServerException as exc:
                    codes.append(_code(exc))
        assert codes.count("UNAVAILABLE") >= 3 and set(codes) <= {"OK", "UNAVAILABLE"}, codes

        # graceful shutdown: two calls in flight when SIGTERM arrives both finish
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            in_flight = [pool.submit(_post_slow, server.grpc_address)]
            time.sleep(0.05)
            in_flight.append(pool.submit(_post_slow, server.grpc_address))
            time.sleep(min(0.3, run_seconds / 3))
            server.process.send_signal(signal.SIGTERM)
            results = [f.result() for f in in_flight]
        assert all(r.as_numpy("y").shape == (1, 4) for r in results)
        assert server.process.wait(timeout=30) == 0
        assert "stopped" in server.log()


def test_grpc_port_zero_turns_it_off_and_a_taken_port_stops_the_start(tmp_path):
    models.save(tmp_path, "mlp", models.mlp())
    with run_server(tmp_path, "--grpc-port", "0") as server:
        assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
        assert "serving V2 gRPC" not in server.log()
    with run_server(tmp_path) as first:
        taken = ("--grpc-port", str(first.grpc_port))
        with run_server(tmp_path, *taken, wait_ready=False) as second:  # started after the first is ready
            assert second.process.wait(timeout=60) == 1
            assert "cannot listen for gRPC" in second.log() and "Traceback" not in second.log()


def test_bearer_tokens_on_the_live_grpc_port(tmp_path):
    """With --auth-tokens-file gRPC needs the same token as REST; health and readiness stay open."""
    models.save(tmp_path, "mlp", models.mlp())
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("grpc-live-infer-token-5b1e infer\n")
    tokens.chmod(0o600)
    with run_server(tmp_path, "--auth-tokens-file", str(tokens)) as server:
        with grpc.insecure_channel(server.grpc_address) as channel:  # a Kubernetes gRPC probe has no token
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with grpcclient.InferenceServerClient(server.grpc_address) as c:
            assert c.is_server_ready()
            x = _inputs({"x": np.ones((1, 4), np.float32)})
            with pytest.raises(InferenceServerException) as caught:
                c.infer("mlp", x)
            assert _code(caught.value) == "UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as caught:
                c.infer("mlp", x, headers={"authorization": "Bearer not-the-token-at-all"})
            assert _code(caught.value) == "UNAUTHENTICATED"
            ok = c.infer("mlp", x, headers={"authorization": "Bearer grpc-live-infer-token-5b1e"})
            assert ok.as_numpy("probs").shape == (1, 3)
        assert "grpc-live-infer-token-5b1e" not in server.log()
