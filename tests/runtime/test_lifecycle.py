"""Start-up failures, --allow-partial, limits, backpressure, deadlines, batching and graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from bundle.manifest import Manifest, TensorSpec
from tests.runtime import models
from tests.runtime.images import png
from tests.support.server import run_server

SLOW_ITERATIONS = 1500  # ~0.7 s per run on one thread of this machine


def _start_fails(repository: Path, *args: str) -> str:
    with run_server(repository, *args, wait_ready=False) as server:
        code = server.process.wait(timeout=60)
        assert code != 0
        return server.log()


def _post_x(url: str, model: str, rows: int = 1, timeout: float = 30) -> requests.Response:
    body = {"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [0.5] * (4 * rows)}]}
    return requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=timeout)


def test_corrupt_model_stops_start(tmp_path):
    models.save(tmp_path, "good", models.mlp())
    bad = models.save(tmp_path, "bad", models.mlp())
    bad.write_bytes(b"\x08\x07 this is not a protobuf")
    log = _start_fails(tmp_path)
    errors = [line for line in log.splitlines() if "cannot start" in line]
    assert len(errors) == 1 and str(bad) in errors[0] and "onnxruntime cannot load it" in errors[0]
    assert "Traceback" not in log


def test_missing_file_and_sha_mismatch_stop_start(tmp_path):
    missing = tmp_path / "missing"
    (missing / "1").mkdir(parents=True)
    spec = [TensorSpec("x", "FP32", [-1, 4])]
    Manifest(name="missing", format="onnx", inputs=spec, outputs=spec).write(missing / "1")
    log = _start_fails(tmp_path)
    assert f"{missing / '1' / 'model.onnx'}: model file is missing" in log

    repo = tmp_path / "sha"
    path = models.save(repo, "m", models.mlp())
    Manifest(
        name="m", format="onnx", inputs=spec, outputs=[TensorSpec("probs", "FP32", [-1, 3])], sha256="0" * 64
    ).write(path.parent)
    log = _start_fails(repo)
    assert f"{path}: sha256" in log and "does not match the manifest" in log


def test_allow_partial_serves_the_rest(tmp_path):
    models.save(tmp_path, "good", models.mlp())
    bad = models.save(tmp_path, "bad", models.mlp())
    bad.write_bytes(b"garbage")
    with run_server(tmp_path, "--allow-partial") as server:
        assert _post_x(server.url, "good").status_code == 200
        reply = _post_x(server.url, "bad")
        assert reply.status_code == 503 and str(bad) in reply.json()["error"]
        assert requests.get(f"{server.url}/v2/models/bad/ready", timeout=5).status_code == 503
        listed = {m["name"]: m["ready"] for m in requests.get(f"{server.url}/api/models", timeout=5).json()["models"]}
        assert listed == {"good": True, "bad": False}
        info = requests.get(f"{server.url}/api/models/bad", timeout=5).json()
        assert str(bad) in info["error"]


def test_model_selection_and_unknown_model(tmp_path):
    models.save(tmp_path, "a", models.mlp())
    models.save(tmp_path, "b", models.two_io())
    with run_server(tmp_path, "--model", "a") as server:
        names = [m["name"] for m in requests.get(f"{server.url}/api/models", timeout=5).json()["models"]]
        assert names == ["a"]
        assert _post_x(server.url, "b").status_code == 404
        assert requests.post(f"{server.url}/predict", json=[[1, 2, 3, 4]], timeout=5).status_code == 200
    log = _start_fails(tmp_path, "--model", "c")
    assert "no model 'c'" in log


def test_limits(tmp_path):
    models.save(tmp_path, "mlp", models.mlp())
    models.save(tmp_path, "fixed", models.fixed())
    image_repo = models.build_repository(tmp_path / "full")
    args = ("--max-body-mb", "1", "--max-elements", "2000", "--max-image-pixels", "100", "--max-json-depth", "6")
    with run_server(image_repo, *args) as server:
        big = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [' + b"1," * 700_000 + b"1]}]}"
        reply = requests.post(f"{server.url}/v2/models/mlp/infer", data=big, timeout=30)
        assert reply.status_code == 413 and "1 MiB" in reply.json()["error"]
        reply = _post_x(server.url, "mlp", rows=600)
        assert reply.status_code == 413 and "--max-elements" in reply.json()["error"]
        reply = requests.post(
            f"{server.url}/api/models/cnn/image", data=png(np.zeros((20, 20, 3), np.uint8)), timeout=5
        )
        assert reply.status_code == 413 and "--max-image-pixels" in reply.json()["error"]
        reply = requests.post(f"{server.url}/api/models/mlp/predict", json=[[[[[[[[1]]]]]]]], timeout=5)
        assert reply.status_code == 400 and "nesting" in reply.json()["error"]
        reply = requests.post(
            f"{server.url}/api/models/cnn/predict", json={"inputs": {"image": np.zeros((9, 8, 8, 3)).tolist()}}
        )
        assert reply.status_code == 400 and "max_batch_size 8" in reply.json()["error"]
        assert _post_x(server.url, "mlp").status_code == 200  # still serving


def test_backpressure_deadline_and_graceful_shutdown(tmp_path):
    models.save(tmp_path, "slow", models.slow(SLOW_ITERATIONS))
    args = ("--intra-op-threads", "1", "--max-queue", "1", "--request-timeout", "5")
    with run_server(tmp_path, *args) as server:
        started = time.perf_counter()
        assert _post_x(server.url, "slow").status_code == 200
        run_seconds = time.perf_counter() - started
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: _post_x(server.url, "slow"), range(6)))
        statuses = sorted(r.status_code for r in replies)
        assert statuses.count(503) >= 3, statuses
        assert set(statuses) <= {200, 503}, statuses
        overloaded = next(r for r in replies if r.status_code == 503)
        assert overloaded.headers["Retry-After"] == "1" and "overloaded" in overloaded.json()["error"]

        # graceful shutdown: two requests in flight when SIGTERM arrives both finish
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            in_flight = [pool.submit(_post_x, server.url, "slow")]
            time.sleep(0.05)
            in_flight.append(pool.submit(_post_x, server.url, "slow"))
            time.sleep(min(0.3, run_seconds / 3))
            server.process.send_signal(signal.SIGTERM)
            assert [f.result().status_code for f in in_flight] == [200, 200]
        assert server.process.wait(timeout=30) == 0
        assert "stopped" in server.log()

    with run_server(tmp_path, "--intra-op-threads", "1", "--request-timeout", str(run_seconds / 4)) as server:
        reply = _post_x(server.url, "slow")
        assert reply.status_code == 504 and "deadline" in reply.json()["error"]
        time.sleep(run_seconds)
        assert requests.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200


def test_adaptive_batching_merges_concurrent_requests(tmp_path):
    models.save(tmp_path, "mlp", models.mlp())
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = [np.random.default_rng(i).standard_normal((1, 4)).astype(np.float32) for i in range(12)]
    with run_server(tmp_path, "--batch-delay-ms", "200", "--max-batch-size", "4") as server:

        def send(x: np.ndarray) -> list:
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
            reply = requests.post(f"{server.url}/v2/models/mlp/infer", json=body, timeout=30)
            assert reply.status_code == 200
            return reply.json()["outputs"][0]["data"]

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(send, rows))
        for x, got in zip(rows, results, strict=True):
            np.testing.assert_allclose(np.array(got, np.float32), session.run(None, {"x": x})[0].ravel(), rtol=1e-6)
        text = requests.get(f"{server.url}/metrics", timeout=5).text
        executions = float(
            next(line.split()[-1] for line in text.splitlines() if line.startswith("nv_inference_exec_count{"))
        )
        inferences = float(
            next(line.split()[-1] for line in text.splitlines() if line.startswith("nv_inference_count{"))
        )
        assert inferences == 12
        assert 3 <= executions < 12  # merged, at most 4 rows per batch


@pytest.mark.parametrize("flag", ["--graph-optimization", "--intra-op-threads"])
def test_bad_cli_values_exit_with_usage(tmp_path, flag):
    models.save(tmp_path, "mlp", models.mlp())
    log = _start_fails(tmp_path, flag, "lots")
    assert "usage: python -m runtime" in log and flag in log


def test_live_while_loading_ready_after_warm_up(tmp_path):
    models.save(tmp_path, "slow", models.slow(SLOW_ITERATIONS * 4))  # warm-up takes a few seconds
    with run_server(tmp_path, "--intra-op-threads", "1", wait_ready=False) as server:
        deadline = time.monotonic() + 60
        while True:
            try:
                live = requests.get(f"{server.url}/v2/health/live", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.process.poll() is None, server.log()
                time.sleep(0.05)
        assert live.status_code == 200
        ready = requests.get(f"{server.url}/v2/health/ready", timeout=2)
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        reply = _post_x(server.url, "slow")
        assert reply.status_code == 503 and "loading" in reply.json()["error"]
        while requests.get(f"{server.url}/v2/health/ready", timeout=2).status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert _post_x(server.url, "slow").status_code == 200
