"""The Open Inference Protocol through tritonclient (JSON and binary) against onnxruntime, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

RNG = np.random.default_rng(99)


@pytest.fixture(scope="module")
def client(server):
    with httpclient.InferenceServerClient(server.address) as c:
        yield c


def _infer(client, model, arrays: dict[str, np.ndarray], binary: bool, outputs=None, version=""):
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else {np.dtype(np.float16): "FP16"}.get(array.dtype)
        from tritonclient.utils import np_to_triton_dtype

        tensor = httpclient.InferInput(name, list(array.shape), datatype or np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs] if outputs else None
    return client.infer(model, inputs, outputs=requested, model_version=version, request_id="req-7")


def test_health_and_server_metadata(client, server):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelport"
    assert "binary_tensor_data" in meta["extensions"]
    assert "model_repository" in meta["extensions"]  # the repository API (index/load/unload) exists
    assert client.is_model_ready("mlp")
    assert client.is_model_ready("mlp", "1")


def test_metadata_derived_from_graph(client):
    meta = client.get_model_metadata("mlp")
    assert meta["name"] == "mlp"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]
    fixed = client.get_model_metadata("fixed")
    assert fixed["inputs"][0]["shape"] == [2, 2]


@pytest.mark.parametrize("binary", [False, True])
def test_mlp_bit_for_bit(client, reference, binary):
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    result = _infer(client, "mlp", {"x": x}, binary, outputs=["probs"] if binary else None)
    got = result.as_numpy("probs")
    want = reference("mlp", {"x": x}, version="2")["probs"]
    assert got.dtype == np.float32 and got.shape == (5, 3)
    assert got.tobytes() == want.tobytes()
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_version"] == "2"  # the highest version by default


def test_versioned_infer(client, reference):
    x = RNG.standard_normal((1, 4)).astype(np.float32)
    result = _infer(client, "mlp", {"x": x}, False, version="1")
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("probs").tobytes() == reference("mlp", {"x": x}, version="1")["probs"].tobytes()
    assert result.as_numpy("probs").tobytes() != reference("mlp", {"x": x}, version="2")["probs"].tobytes()


@pytest.mark.parametrize("binary", [False, True])
def test_every_datatype(client, reference, binary):
    feed = {
        "i64": np.array([[1, -(2**40)], [3, 4]], dtype=np.int64),
        "i32": np.array([[7, -8], [2**30, 0]], dtype=np.int32),
        "flag": np.array([[True, False], [False, True]]),
        "half": np.array([[0.5, -1.25], [3.0, 1e-3]], dtype=np.float16),
        "u8": np.array([[0, 255], [17, 128]], dtype=np.uint8),
        "text": np.array([["héllo", ""], ["a b", "z"]], dtype=object),
    }
    want = reference("types", feed)
    send = dict(feed)
    send["text"] = np.array([[s.encode() for s in row] for row in feed["text"]], dtype=object)
    result = _infer(client, "types", send, binary, outputs=list(want) if binary else None)
    for name, expected in want.items():
        got = result.as_numpy(name)
        if name == "text_out":
            got = np.array([[x.decode() if isinstance(x, bytes) else x for x in row] for row in got], dtype=object)
            assert got.tolist() == expected.tolist()
        else:
            assert got.dtype == expected.dtype, name
            assert got.tobytes() == expected.tobytes(), name


def test_two_inputs_output_selection(client, reference):
    a = RNG.standard_normal((3, 3)).astype(np.float32)
    b = RNG.standard_normal((3, 3)).astype(np.float32)
    result = _infer(client, "two_io", {"a": a, "b": b}, True, outputs=["prod"])
    outputs = [o["name"] for o in result.get_response()["outputs"]]
    assert outputs == ["prod"]
    assert result.as_numpy("prod").tobytes() == reference("two_io", {"a": a, "b": b})["prod"].tobytes()


def test_mixed_binary_and_json_outputs(server, reference):
    """Per-output binary_data choice: one output binary, the other JSON, in one raw HTTP exchange."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = {
        "inputs": [
            {"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
            {"name": "b", "shape": [2, 3], "datatype": "FP32", "data": [[1, 1, 1], [2, 2, 2]]},
        ],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "prod"}],
    }
    import json

    head = json.dumps(header).encode()
    reply = requests.post(
        f"{server.url}/v2/models/two_io/infer",
        data=head + a.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    length = int(reply.headers["Inference-Header-Content-Length"])
    body = json.loads(reply.content[:length])
    summed = np.frombuffer(reply.content[length:], dtype=np.float32).reshape(2, 3)
    b = np.array([[1, 1, 1], [2, 2, 2]], dtype=np.float32)
    want = reference("two_io", {"a": a, "b": b})
    assert summed.tobytes() == want["sum"].tobytes()
    assert body["outputs"][0]["parameters"]["binary_data_size"] == 24
    assert np.array(body["outputs"][1]["data"], dtype=np.float32).tobytes() == want["prod"].ravel().tobytes()


def test_nested_json_data(server, reference):
    x = [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]]
    reply = requests.post(
        f"{server.url}/v2/models/mlp/infer",
        json={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x}]},
        timeout=10,
    )
    assert reply.status_code == 200
    out = reply.json()["outputs"][0]
    assert out["shape"] == [2, 3] and out["datatype"] == "FP32"
    want = reference("mlp", {"x": np.array(x, dtype=np.float32)}, version="2")["probs"]
    assert np.array(out["data"], dtype=np.float32).tobytes() == want.ravel().tobytes()


def test_image_as_v2_bytes_tensor(client, reference):
    """An encoded PNG sent as BYTES to the image input is decoded by the image codec."""
    from tests.runtime.images import by_hand, png

    data = png(RNG.integers(0, 256, (11, 13, 3), dtype=np.uint8))
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object), binary_data=True)
    result = client.infer("cnn", [tensor])
    want = reference("cnn", {"image": by_hand(data, "cnn")})["probs"]
    assert result.as_numpy("probs").tobytes() == want.tobytes()


@pytest.mark.parametrize(
    ("model", "body", "status", "fragment"),
    [
        ("nope", {"inputs": []}, 404, "unknown model 'nope'"),
        (
            "mlp",
            {"inputs": [{"name": "y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            400,
            "no input 'y'",
        ),
        (
            "mlp",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]},
            400,
            "needs 4 values",
        ),
        (
            "mlp",
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            400,
            "shape [1, 3]",
        ),
        ("mlp", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}, 400, "is FP32"),
        (
            "mlp",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["a", 2, 3, 4]}]},
            400,
            "numbers",
        ),
        ("mlp", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1]}]}, 400, "unknown datatype"),
        (
            "mlp",
            {
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                "outputs": [{"name": "nope"}],
            },
            400,
            "no output 'nope'",
        ),
        (
            "types",
            {"inputs": [{"name": "i32", "shape": [1, 2], "datatype": "INT32", "data": [1, 2**40]}]},
            400,
            "range",
        ),
        ("fixed", {"inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1] * 6}]}, 400, "[2, 2]"),
        ("mlp", [1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_are_4xx_with_error(server, model, body, status, fragment):
    reply = requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=10)
    assert reply.status_code == status, reply.text
    assert fragment in reply.json()["error"]


def test_malformed_json_and_unknown_routes(server):
    reply = requests.post(f"{server.url}/v2/models/mlp/infer", data=b"{not json", timeout=10)
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]
    reply = requests.get(f"{server.url}/v2/models/mlp/versions/9", timeout=10)
    assert reply.status_code == 404 and "no version '9'" in reply.json()["error"]
    reply = requests.get(f"{server.url}/no/such/route", timeout=10)
    assert reply.status_code == 404 and "error" in reply.json()
    reply = requests.get(f"{server.url}/v2/models/mlp/infer", timeout=10)
    assert reply.status_code == 405 and "POST" in reply.json()["error"]


def test_tritonclient_sees_errors(client):
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
    tensor = httpclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=True)
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("mlp", [tensor])


def test_binary_size_mismatch(server):
    import json

    head = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]}
    ).encode()
    reply = requests.post(
        f"{server.url}/v2/models/mlp/infer",
        data=head + b"\0" * 12,
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=10,
    )
    assert reply.status_code == 400 and "needs 16 bytes" in reply.json()["error"]


def test_json_depth_limit(server):
    deep = "[" * 100 + "1" + "]" * 100
    body = '{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ' + deep + "}]}"
    reply = requests.post(f"{server.url}/v2/models/mlp/infer", data=body, timeout=10)
    assert reply.status_code == 400 and "nesting" in reply.json()["error"]


def test_metrics_move(server, client):
    def counter(text: str, name: str) -> float:
        prefix = f'{name}{{model="two_io",version="1"}} '
        line = next(line for line in text.splitlines() if line.startswith(prefix))
        return float(line[len(prefix) :])

    before = requests.get(f"{server.url}/metrics", timeout=10).text
    a = np.ones((4, 3), dtype=np.float32)
    _infer(client, "two_io", {"a": a, "b": a}, False)
    bad = {"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert requests.post(f"{server.url}/v2/models/two_io/infer", json=bad, timeout=10).status_code == 400
    after = requests.get(f"{server.url}/metrics", timeout=10).text
    assert counter(after, "nv_inference_request_success") == counter(before, "nv_inference_request_success") + 1
    assert counter(after, "nv_inference_request_failure") == counter(before, "nv_inference_request_failure") + 1
    assert counter(after, "nv_inference_count") == counter(before, "nv_inference_count") + 4
    assert counter(after, "nv_inference_exec_count") == counter(before, "nv_inference_exec_count") + 1
    for histogram in ("request_duration_us", "queue_duration_us", "compute_infer_duration_us"):
        assert f'nv_inference_{histogram}_count{{model="two_io",version="1"}}' in after


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"id": 7}, '"id" must be a string'),
        ({"parameters": None}, '"parameters" must be an object'),
        ({"outputs": None}, '"outputs" must be a list'),
        ({"outputs": [{"name": "probs", "parameters": []}]}, '"parameters" must be an object'),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": 5}]}, '"data" must be a list'),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4, "parameters": None}]},
            "must be",
        ),
    ],
)
def test_schema_violations_are_400(server, change, fragment):
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], **change}
    reply = requests.post(f"{server.url}/v2/models/mlp/infer", json=body, timeout=10)
    assert reply.status_code == 400, reply.text
    assert fragment in reply.json()["error"]
