"""``--workers N``: real worker processes on one port, metrics summed over them, restart, drain on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import time
from pathlib import Path

import requests
from prometheus_client.mmap_dict import MmapedDict

from runtime.workers import default_intra_op_threads
from tests.runtime import models
from tests.runtime.test_lifecycle import _post_x
from tests.support.server import run_server

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def _pids(log: str) -> dict[int, int]:
    """The newest pid of each worker index, from the parent's log."""
    return {int(index): int(pid) for index, pid in STARTED.findall(log)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _successes_by_pid(directory: Path) -> dict[int, float]:
    """nv_inference_request_success per worker, read from prometheus_client's per-process files."""
    found: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[-1])
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "nv_inference_request_success":
                found[pid] = found.get(pid, 0) + value
    return found


def _metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def _wait_for(condition, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_workers_share_the_port_and_sum_metrics_and_restart(tmp_path):
    models.save(tmp_path, "mlp", models.mlp())
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with run_server(tmp_path, "--workers", "2", "--log-level", "info", env=env) as server:
        _wait_for(lambda: len(_pids(server.log())) == 2, what="two workers")
        first = _pids(server.log())
        assert all(_alive(pid) for pid in first.values())
        assert f"{default_intra_op_threads(2)} intra-op threads each" in server.log()

        # every request opens a new connection: both worker processes end up answering some
        sent = 0
        while True:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda _: _post_x(server.url, "mlp").status_code, range(20)))
            assert statuses == [200] * 20
            sent += 20
            time.sleep(1.0)  # workers write their counts at least every 0.5 s
            by_pid = _successes_by_pid(metrics_dir)
            if all(by_pid.get(pid, 0) > 0 for pid in first.values()) or sent >= 400:
                break
        assert all(by_pid.get(pid, 0) > 0 for pid in first.values()), by_pid
        assert _metric(server.url, "nv_inference_request_success") == sent  # any worker reports the sum

        # a killed worker is logged and replaced; the other kept the port open meanwhile
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: f"worker 0 (pid {victim}) died (signal SIGKILL); restarting it" in server.log(), what="log")
        assert _post_x(server.url, "mlp").status_code == 200
        sent += 1
        _wait_for(lambda: _pids(server.log())[0] != victim, what="a new worker 0")
        replacement = _pids(server.log())[0]
        _wait_for(lambda: _successes_by_pid(metrics_dir).get(replacement) is not None, what="the new worker loaded")
        for _ in range(10):
            assert _post_x(server.url, "mlp").status_code == 200
        sent += 10
        time.sleep(1.0)
        assert _alive(replacement) and _alive(first[1])
        # the killed worker's counts stay in the sum (counters only go up); at most its last 0.5 s may be lost,
        # and it was idle then
        assert _metric(server.url, "nv_inference_request_success") == sent
    assert server.process.returncode == 0
    assert not any(_alive(pid) for pid in (replacement, first[1]))


def test_sigterm_drains_every_worker(tmp_path):
    models.save(tmp_path, "slow", models.slow(1500))
    with run_server(tmp_path, "--workers", "2", "--intra-op-threads", "1", "--log-level", "info") as server:
        _wait_for(lambda: len(_pids(server.log())) == 2, what="two workers")
        pids = list(_pids(server.log()).values())
        started = time.perf_counter()
        assert _post_x(server.url, "slow").status_code == 200
        run_seconds = time.perf_counter() - started
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            in_flight = [pool.submit(_post_x, server.url, "slow", 1, 120) for _ in range(4)]
            time.sleep(min(0.3, run_seconds / 3))
            server.process.send_signal(signal.SIGTERM)
            assert [f.result().status_code for f in in_flight] == [200] * 4
        assert server.process.wait(timeout=60) == 0
        assert "SIGTERM: stopping 2 workers" in server.log()
        assert not any(_alive(pid) for pid in pids)
        try:
            requests.get(f"{server.url}/v2/health/live", timeout=2)
            raise AssertionError("the port still answers after the server stopped")
        except requests.ConnectionError:
            pass


def test_a_worker_that_cannot_start_stops_the_server(tmp_path):
    bad = models.save(tmp_path, "bad", models.mlp())
    bad.write_bytes(b"not a model")
    with run_server(tmp_path, "--workers", "2", wait_ready=False) as server:
        assert server.process.wait(timeout=120) == 1
        log = server.log()
        assert "could not start; stopping" in log and str(bad) in log
        assert not any(_alive(pid) for pid in _pids(log).values())
