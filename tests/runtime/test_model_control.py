"""Model control on a real server: the repository API (index, load, unload), zero-downtime reloads
under load, failed loads that keep the old version serving, unload with requests in flight, every
version-policy case, poll mode, and loads of one model that never overlap."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from runtime.control import ModelControl
from runtime.engines import EngineOptions
from runtime.errors import ModelLoadError
from runtime.repository import Repository
from tests.runtime import models
from tests.support.server import RunningServer, run_server

EXPLICIT = ("--model-control-mode", "explicit", "--allow-unauthenticated-admin")
ZEROS = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}


def place(repository: Path, name: str, version: int, value: float) -> None:
    """Write ``offset(value)`` as NAME/VERSION the way a deployment should: into a temporary directory,
    then one rename (a new version), or one file rename over the old file (a rewritten version)."""
    target = repository / name / str(version)
    if target.exists():
        tmp = target / ".model.onnx.tmp"
        onnx.save(models.offset(value), str(tmp))
        os.replace(tmp, target / "model.onnx")
        return
    staging = repository / name / f".staging-{version}"
    staging.mkdir(parents=True)
    onnx.save(models.offset(value), str(staging / "model.onnx"))
    os.rename(staging, target)


def answer(server: RunningServer, name: str = "m", version: str | None = None) -> float:
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    reply = requests.post(server.url + path, json=ZEROS, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()["outputs"][0]["data"][0]


def load(server: RunningServer, name: str = "m") -> requests.Response:
    return requests.post(f"{server.url}/v2/repository/models/{name}/load", timeout=120)


def index(server: RunningServer) -> list[dict]:
    reply = requests.post(f"{server.url}/v2/repository/index", timeout=10)
    assert reply.status_code == 200
    return reply.json()


def ready_versions(server: RunningServer, name: str = "m") -> list[str]:
    return [row["version"] for row in index(server) if row["name"] == name and row["state"] == "READY"]


def test_reload_under_load_drops_nothing(tmp_path):
    """10 reloads (5 new version directories, 5 rewritten model files) while two clients send requests
    back to back. No request may fail, each client must never see an older model after a newer one, and
    the largest latency of a request that overlapped a swap is reported."""
    place(tmp_path, "m", 1, 0.0)
    with run_server(tmp_path, *EXPLICIT, "--load-model", "m") as server:
        stop = threading.Event()
        records: list[tuple[int, float, float, int, float | None]] = []  # client, start, end, status, value

        def client(number: int) -> None:
            session = requests.Session()
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    reply = session.post(f"{server.url}/v2/models/m/infer", json=ZEROS, timeout=30)
                    status = reply.status_code
                    value = reply.json()["outputs"][0]["data"][0] if status == 200 else None
                except requests.RequestException:
                    status, value = -1, None
                records.append((number, started, time.perf_counter(), status, value))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        windows: list[tuple[float, float]] = []
        version = 1
        try:
            time.sleep(0.5)
            for reload in range(1, 11):
                if reload % 2:  # a new version directory: latest 1 moves to it
                    version += 1
                place(tmp_path, "m", version, float(reload))  # even: the serving version's file rewritten
                started = time.perf_counter()
                reply = load(server)
                windows.append((started, time.perf_counter()))
                assert reply.status_code == 200, reply.text
                assert answer(server) == float(reload)  # the switch is visible as soon as load answers
                assert ready_versions(server) == [str(version)]
                time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        failed = [r for r in records if r[3] != 200]
        assert not failed, failed[:5]
        assert len(records) > 100
        for number in range(2):
            values = [r[4] for r in records if r[0] == number]
            assert values == sorted(values), "a client saw an older model after a newer one"
        assert {r[4] for r in records} <= {float(v) for v in range(11)}
        during = [r[2] - r[1] for r in records if any(r[1] < end and r[2] > start for start, end in windows)]
        outside = [r[2] - r[1] for r in records if not any(r[1] < end and r[2] > start for start, end in windows)]
        swap = max(end - start for start, end in windows)
        median = sorted(outside)[len(outside) // 2]
        print(
            f"\nreload under load: {len(records)} requests, {len(failed)} failed, 10 reloads; "
            f"largest latency during a swap {max(during) * 1e3:.1f} ms (outside swaps: largest "
            f"{max(outside) * 1e3:.1f} ms, median {median * 1e3:.1f} ms); load calls took at most {swap * 1e3:.0f} ms"
        )
        assert "Traceback" not in server.log()


def test_a_broken_new_version_keeps_the_old_one_serving(tmp_path):
    place(tmp_path, "m", 1, 1.0)
    with run_server(tmp_path, *EXPLICIT, "--load-model", "m") as server:
        broken = tmp_path / "m" / "2" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"\x08\x07 not an onnx file")
        reply = load(server)
        assert reply.status_code == 400
        assert str(broken) in reply.json()["error"] and "onnxruntime cannot load it" in reply.json()["error"]
        assert answer(server) == 1.0 and answer(server, version="1") == 1.0
        rows = [row for row in index(server) if row["name"] == "m"]
        assert {"name": "m", "version": "1", "state": "READY", "reason": ""} in rows
        failed = next(row for row in rows if row["version"] == "2")
        assert failed["state"] == "UNAVAILABLE" and str(broken) in failed["reason"]
        assert f"model m version 2 not loaded (still serving: 1): {broken}" in server.log()

        # tritonclient gets the reason too, at once (not a timeout)
        client = httpclient.InferenceServerClient(server.address)
        started = time.perf_counter()
        with pytest.raises(InferenceServerException) as exc:
            client.load_model("m")
        assert str(broken) in str(exc.value) and time.perf_counter() - started < 10

        shutil.rmtree(broken.parent)
        place(tmp_path, "m", 2, 2.0)  # fixed: the next load succeeds (nothing stuck)
        client.load_model("m")
        assert answer(server) == 2.0 and client.is_model_ready("m")

        (tmp_path / "m" / "2" / "model.onnx").write_bytes(b"garbage")  # the serving version's file broken
        assert load(server).status_code == 400
        assert answer(server) == 2.0
        row = next(row for row in index(server) if row["name"] == "m" and row["version"] == "2")
        assert row["state"] == "READY" and "the last load failed" in row["reason"]


def test_unload_completes_the_requests_in_flight(tmp_path):
    # several tenths of a second per run: the third request, queued behind two runs, ends well after the unload
    # starts, even on a fast machine (at 1500 iterations the three ended only 0.23 s after it once)
    models.save(tmp_path, "slow", models.slow(3000))
    place(tmp_path, "m", 1, 1.0)
    with run_server(tmp_path, *EXPLICIT, "--load-model", "slow", "--load-model", "m", "--instances", "2") as server:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(answer, server, "slow") for _ in range(3)]
            time.sleep(0.3)  # the requests are running or queued
            started = time.perf_counter()
            unloaded = requests.post(f"{server.url}/v2/repository/models/slow/unload", timeout=60)
            took = time.perf_counter() - started
            assert unloaded.status_code == 200
            assert [call.result(timeout=60) for call in calls] == [0.0, 0.0, 0.0]  # every one answered
        assert took > 0.3  # unload waited for them
        gone = requests.post(f"{server.url}/v2/models/slow/infer", json=ZEROS, timeout=10)
        assert gone.status_code == 404 and "not loaded (unloaded)" in gone.json()["error"]
        assert {"name": "slow", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"} in index(server)
        assert answer(server) == 1.0  # the other model is untouched
        assert requests.post(f"{server.url}/v2/repository/models/nope/unload", timeout=10).status_code == 400
        assert load(server, "slow").status_code == 200 and answer(server, "slow") == 0.0


POLICIES = [
    ("", ["3"]),  # default: latest 1
    ("version_policy: { latest: { num_versions: 2 } }", ["2", "3"]),
    ("version_policy: { all { } }", ["1", "2", "3"]),
    ("version_policy: { specific: { versions: [1, 3] } }", ["1", "3"]),
]


def test_every_version_policy_case(tmp_path):
    for version in (1, 2, 3):
        place(tmp_path, "m", version, float(version))
    config = tmp_path / "m" / "config.pbtxt"
    with run_server(tmp_path, *EXPLICIT, "--load-model", "m") as server:
        for text, expected in POLICIES:
            config.write_text(f'name: "m"\n{text}\n')
            assert load(server).status_code == 200, text
            assert ready_versions(server) == expected, text
            for version in ("1", "2", "3"):
                reply = requests.post(f"{server.url}/v2/models/m/versions/{version}/infer", json=ZEROS, timeout=10)
                if version in expected:
                    assert reply.status_code == 200 and reply.json()["outputs"][0]["data"][0] == float(version)
                    assert reply.json()["model_version"] == version
                else:
                    assert reply.status_code == 404, (text, version)
            assert answer(server) == float(expected[-1])  # no version: the highest served
            metadata = requests.get(f"{server.url}/v2/models/m", timeout=10).json()
            assert metadata["versions"] == expected
        config.write_text("version_policy: { specific: { versions: [7] } }\n")
        reply = load(server)
        assert reply.status_code == 400 and "selects none of (3, 2, 1)" in reply.json()["error"]
        config.write_text("version_policy: { latest: { num_versions: 0 } }\n")
        reply = load(server)
        assert reply.status_code == 400 and f"{config}: version_policy.latest.num_versions" in reply.json()["error"]
        assert ready_versions(server) == ["1", "3"]  # the last good load keeps serving


def test_policy_at_start_and_all_versions_flag(tmp_path):
    for version in (1, 2, 3):
        place(tmp_path, "m", version, float(version))
    (tmp_path / "m" / "config.pbtxt").write_text("version_policy: { latest: { num_versions: 2 } }\n")
    with run_server(tmp_path) as server:  # control mode none: the policy applies at start too
        assert requests.get(f"{server.url}/v2/models/m", timeout=10).json()["versions"] == ["2", "3"]
        assert load(server).status_code == 403  # no admin token: the repository API is off
    with run_server(tmp_path, "--all-versions", "--allow-unauthenticated-admin") as server:
        assert requests.get(f"{server.url}/v2/models/m", timeout=10).json()["versions"] == ["1", "2", "3"]
        reply = load(server)
        assert reply.status_code == 400 and "not allowed in model control mode 'none'" in reply.json()["error"]


def test_poll_mode_follows_the_repository(tmp_path):
    place(tmp_path, "m", 1, 1.0)
    args = ("--model-control-mode", "poll", "--repository-poll-secs", "0.2", "--allow-unauthenticated-admin")
    with run_server(tmp_path, *args) as server:

        def wait_for(check, timeout: float = 30.0) -> None:
            deadline = time.monotonic() + timeout
            while not check():
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.1)

        assert answer(server) == 1.0
        place(tmp_path, "m", 2, 2.0)
        wait_for(lambda: answer(server) == 2.0)
        broken = tmp_path / "m" / "3" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"garbage")
        wait_for(lambda: any(r["version"] == "3" and r["state"] == "UNAVAILABLE" for r in index(server)))
        time.sleep(1.0)  # five more polls: the failure is not retried while the files stay the same
        assert server.log().count("model m version 3 not loaded") == 1
        assert answer(server) == 2.0
        shutil.rmtree(broken.parent)
        place(tmp_path, "m", 3, 3.0)
        wait_for(lambda: answer(server) == 3.0)
        place(tmp_path, "n", 1, 7.0)  # a new model appears
        wait_for(lambda: ("n", "1", "READY") in {(r["name"], r["version"], r["state"]) for r in index(server)})
        assert answer(server, "n") == 7.0
        shutil.rmtree(tmp_path / "n")  # and goes
        wait_for(lambda: requests.post(f"{server.url}/v2/models/n/infer", json=ZEROS, timeout=10).status_code == 404)
        reply = load(server)
        assert reply.status_code == 400 and "'poll'" in reply.json()["error"]


def test_explicit_mode_start(tmp_path):
    place(tmp_path, "a", 1, 1.0)
    place(tmp_path, "b", 1, 2.0)
    with run_server(tmp_path, *EXPLICIT) as server:  # nothing loaded at start, yet ready
        assert {(r["name"], r["state"]) for r in index(server)} == {("a", "UNAVAILABLE"), ("b", "UNAVAILABLE")}
        assert requests.post(f"{server.url}/v2/models/a/infer", json=ZEROS, timeout=10).status_code == 404
        assert load(server, "b").status_code == 200 and answer(server, "b") == 2.0
        reply = load(server, "c")
        assert reply.status_code == 400 and "no model 'c'" in reply.json()["error"]
        reply = requests.post(
            f"{server.url}/v2/repository/models/a/load", json={"parameters": {"config": "{}"}}, timeout=10
        )
        assert reply.status_code == 400 and "not supported" in reply.json()["error"]
    with run_server(tmp_path, *EXPLICIT, "--load-model", "zzz", wait_ready=False) as server:
        assert server.process.wait(timeout=60) == 1
        assert "no model 'zzz'" in server.log() and "Traceback" not in server.log()


def test_loads_of_one_model_never_overlap(tmp_path):
    """Five concurrent loads of one model run one after another (the model's lock); never two builds at once."""
    place(tmp_path, "m", 1, 1.0)
    repository = Repository(tmp_path, EngineOptions())
    building = {"now": 0, "most": 0}
    build = repository.build

    def counting_build(entry):
        building["now"] += 1
        building["most"] = max(building["most"], building["now"])
        time.sleep(0.05)
        try:
            return build(entry)
        finally:
            building["now"] -= 1

    repository.build = counting_build  # type: ignore[method-assign]
    attached: list[str] = []

    def attach(entry, engine) -> None:
        entry.loaded = SimpleNamespace(engine=engine)  # the app's attach installs a LoadedModel
        attached.append(entry.version)

    async def detach(entry) -> None:
        attached.remove(entry.version)

    async def scenario() -> None:
        pool = concurrent.futures.ThreadPoolExecutor(4)
        control = ModelControl(repository, lambda: pool, attach, detach)
        results = await asyncio.gather(*(control.load("m") for _ in range(5)))
        assert results == [["1"]] * 5
        with pytest.raises(ModelLoadError, match="no model 'absent'"):
            await control.load("absent")
        pool.shutdown()

    asyncio.run(scenario())
    assert building["most"] == 1
    assert attached == ["1"]  # four replaced entries were drained and detached, one serves
    assert [e.closed for e in repository.entries()] == [False]
