"""Backpressure (503 + Retry-After past the per-model queue bound), deadlines (504) and graceful
shutdown on SIGTERM, against the real server with a model that is slow on purpose.

The server runs onnxruntime with one intra-op thread so the slow model's timing is predictable
on a shared 2-core machine; each test derives its waits from the measured inference time.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.reliability import models
from tests.reliability.figures import record
from tests.support.server import RunningServer, run_server

ONE_THREAD = ("--intra-op-threads", "1")


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """(repository with ``mlp`` and ``slow``, seconds per slow inference)."""
    repo = tmp_path_factory.mktemp("slow_repo")
    models.write_mlp(repo)
    _, seconds = models.calibrated_slow(repo, 0.8)
    record(f"slow model: {seconds:.2f}s per inference")
    return repo, seconds


def infer_slow(server: RunningServer, value: float, timeout: float = 60) -> requests.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [value] * 4}]}
    return requests.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=timeout)


def infer_mlp(server: RunningServer) -> requests.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    return requests.post(f"{server.url}/v2/models/mlp/infer", json=body, timeout=30)


def assert_slow_answer(response: requests.Response, value: float) -> None:
    """The slow model returns its input unchanged (y = x + 0 * loop)."""
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(response.json()["outputs"][0]["data"], [value] * 4)


def in_parallel(count: int, call: Callable[[int], requests.Response]) -> list[Future]:
    pool = ThreadPoolExecutor(count)
    futures = [pool.submit(call, i) for i in range(count)]
    pool.shutdown(wait=False)
    return futures


def test_queue_bound_gives_503_with_retry_after_then_normal_service(slow_repository: tuple[Path, float]) -> None:
    repo, seconds = slow_repository
    with run_server(repo, *ONE_THREAD, "--max-queue", "2") as server:
        futures = in_parallel(12, lambda i: infer_slow(server, float(i)))
        time.sleep(min(0.3, seconds / 3))
        # The bound is per model: the MLP answers while the slow model's queue is full.
        started = time.perf_counter()
        assert infer_mlp(server).status_code == 200
        mlp_seconds = time.perf_counter() - started
        responses = [f.result(timeout=60) for f in futures]
        statuses = [r.status_code for r in responses]
        record(f"flood of 12 on --max-queue 2: statuses {sorted(statuses)}, mlp answered in {mlp_seconds:.3f}s")
        overloaded = [r for r in responses if r.status_code == 503]
        assert len(overloaded) >= 12 - 1 - 2 - 2  # one running, two queued (+ slack for arrival order)
        for response in overloaded:
            assert int(response.headers["Retry-After"]) >= 1
            assert "overloaded" in response.json()["error"]
            assert "2 requests already queued" in response.json()["error"]
        served = [(i, r) for i, r in enumerate(responses) if r.status_code == 200]
        assert served, statuses
        for i, response in served:
            assert_slow_answer(response, float(i))
        assert set(statuses) <= {200, 503}
        assert mlp_seconds < 2 * seconds  # not stuck behind the slow model (that would be 3x or more)
        # Normal service after the flood.
        assert_slow_answer(infer_slow(server, 7.0), 7.0)
        assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_deadline_gives_504_at_the_deadline_and_the_server_keeps_serving(
    slow_repository: tuple[Path, float],
) -> None:
    repo, seconds = slow_repository
    timeout = round(seconds / 4, 2)
    with run_server(repo, *ONE_THREAD, "--request-timeout", str(timeout)) as server:
        started = time.perf_counter()
        response = infer_slow(server, 1.0)
        elapsed = time.perf_counter() - started
        assert response.status_code == 504, response.text
        assert "--request-timeout" in response.json()["error"]
        assert "slow" in response.json()["error"]
        record(f"deadline {timeout}s on a {seconds:.2f}s model: 504 after {elapsed:.2f}s")
        assert elapsed < timeout + seconds / 2  # answered at the deadline, not after the inference
        # Queued requests past their deadline are dropped, not run: a burst all times out fast.
        burst = [f.result(timeout=60) for f in in_parallel(4, lambda i: infer_slow(server, float(i)))]
        assert [r.status_code for r in burst] == [504] * 4, [r.text for r in burst]
        # The MLP has the same short deadline: let the abandoned slow inference finish first, so a busy
        # machine does not push a 1 ms inference past it.
        time.sleep(seconds)
        response = infer_mlp(server)
        assert response.status_code == 200, response.text
        assert server.process.poll() is None


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(
    slow_repository: tuple[Path, float],
) -> None:
    repo, seconds = slow_repository
    grace = 20.0
    with run_server(repo, *ONE_THREAD, "--shutdown-grace", str(grace), "--max-batch-size", "1") as server:
        # Three slow requests, run one after another (no batching): ~3x the inference time.
        futures = in_parallel(3, lambda i: infer_slow(server, float(i + 1)))
        time.sleep(min(0.3, seconds / 3))
        sent_at = time.perf_counter()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass
        still_running = sum(not f.done() for f in futures)
        assert still_running >= 1, "the in-flight requests finished before the refusal could be observed"
        responses = [f.result(timeout=grace + 30) for f in futures]
        for i, response in enumerate(responses):
            assert_slow_answer(response, float(i + 1))
        code = server.process.wait(timeout=grace + 10)
        exited_after = time.perf_counter() - sent_at
        record(
            f"SIGTERM with 3 in flight ({seconds:.2f}s each): {still_running} still running when a new "
            f"connection was refused; all 3 answered 200; exit {code} after {exited_after:.2f}s"
        )
        assert code == 0
        assert exited_after < grace
        assert "stopped" in server.log()


def test_sigterm_with_work_past_the_grace_period_still_exits_0_promptly(
    slow_repository: tuple[Path, float],
) -> None:
    repo, seconds = slow_repository
    grace = round(seconds * 2, 2)
    with run_server(repo, *ONE_THREAD, "--shutdown-grace", str(grace), "--max-batch-size", "1") as server:
        futures = in_parallel(6, lambda i: infer_slow(server, float(i)))  # ~6x the inference time of work
        time.sleep(min(0.3, seconds / 3))
        sent_at = time.perf_counter()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=grace + 3 * seconds + 10)
        exited_after = time.perf_counter() - sent_at
        outcomes: list[str] = []
        for future in futures:
            try:
                outcomes.append(str(future.result(timeout=10).status_code))
            except requests.ConnectionError:
                outcomes.append("closed")
        record(
            f"SIGTERM, grace {grace}s, 6 x {seconds:.2f}s of work: exit {code} after {exited_after:.2f}s; {outcomes}"
        )
        assert code == 0
        # Handlers get half the grace period to finish, cancelled ones the other half; then the process
        # exits once the one inference still running ends.
        assert exited_after < grace + seconds + 3
        assert "200" in outcomes  # what fit in the grace period was answered
        assert set(outcomes) <= {"200", "503", "closed"}


def pending_requests(server: RunningServer, model: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("nv_inference_pending_request_count{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no pending gauge for {model!r} in /metrics:\n{text[:2000]}")


def test_clients_that_give_up_leave_nothing_behind(slow_repository: tuple[Path, float]) -> None:
    """Clients that time out and hang up mid-request: the server drops their work, its queue gauge
    returns to zero, and it answers the next client normally."""
    repo, seconds = slow_repository
    with run_server(repo, *ONE_THREAD, "--max-queue", "64") as server:

        def impatient(i: int) -> str:
            try:
                infer_slow(server, float(i), timeout=seconds / 4)
            except requests.Timeout:
                return "gave up"
            return "answered"

        outcomes = [f.result(timeout=60) for f in in_parallel(8, impatient)]
        assert outcomes == ["gave up"] * 8
        deadline = time.monotonic() + 10 * seconds + 10
        while pending_requests(server, "slow") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pending_requests(server, "slow") == 0
        assert_slow_answer(infer_slow(server, 3.0), 3.0)
        assert infer_mlp(server).status_code == 200
        assert "Traceback" not in server.log()
        assert "unhandled error" not in server.log()


def test_sigterm_while_models_are_still_loading_exits_0(tmp_path: Path) -> None:
    """An orchestrator may stop a pod that is still warming up: the server stops before it ever
    served a prediction, exits 0, and takes at most the model load it was in the middle of."""
    _, seconds = models.calibrated_slow(tmp_path, 2.0)  # warm-up runs one inference: a slow start
    with run_server(tmp_path, *ONE_THREAD, wait_ready=False, log_dir=tmp_path) as server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200:
                    break
            time.sleep(0.05)
        # While loading: live, not ready, and inference is a clear 503, not a hang or a 5xx of another kind.
        assert requests.get(f"{server.url}/v2/health/live", timeout=5).status_code == 200
        assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 503
        loading = infer_slow(server, 1.0, timeout=5)
        assert loading.status_code == 503, loading.text
        assert "not ready" in loading.json()["error"]
        assert "ready in" not in server.log(), "the model finished loading before SIGTERM could be sent"
        sent_at = time.perf_counter()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=3 * seconds + 30)
        exited_after = time.perf_counter() - sent_at
        record(f"SIGTERM during a {seconds:.2f}s warm-up: exit {code} after {exited_after:.2f}s")
        assert code == 0
        assert exited_after < 2 * seconds + 5
        assert "Traceback" not in server.log()
