"""A bounded load test: mixed valid and invalid requests at fixed concurrency against the real server.

Passes when no response is a 5xx, every valid request's answer matches onnxruntime run directly on
the same model file, every invalid one gets its 4xx with an ``{"error"}`` body, and the server's
resident memory (VmRSS) after the run is within ``RSS_BOUND_MB`` of what it was after warm-up.

``MODELPORT_LOAD_SECONDS`` (default 60) and ``MODELPORT_LOAD_CONCURRENCY`` (default 32) size it;
the first ``WARMUP_SHARE`` of the time is warm-up (allocator pools, thread stacks, caches).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.reliability import models
from tests.reliability.figures import record
from tests.support.server import RunningServer, run_server

LOAD_SECONDS = float(os.environ.get("MODELPORT_LOAD_SECONDS", "60"))
CONCURRENCY = int(os.environ.get("MODELPORT_LOAD_CONCURRENCY", "32"))
WARMUP_SHARE = 0.2
RSS_BOUND_MB = 50.0
RTOL, ATOL = 1e-5, 1e-6  # merged batches may round the last bit differently from a single run


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Case:
    """One prepared request: how to send it, what status to expect, and how to check the answer."""

    kind: str
    method: str
    path: str
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, Any] | None = None
    check: Callable[[bytes, dict[str, str]], None] | None = None


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if isinstance(status, int) and status >= 500)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _close(name: str, got: Any, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)


def build_cases(mlp_path: Path, vision_path: Path, rng: np.random.Generator) -> tuple[list[Case], list[Case]]:
    """(valid cases with their expected numbers, invalid cases with their expected 4xx)."""
    mlp, vision = _session(mlp_path), _session(vision_path)
    valid: list[Case] = []
    for i in range(48):
        rows = int(rng.integers(1, 9))
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        (y,) = mlp.run(None, {"x": x})
        kind = ("v2_json", "v2_binary", "simple")[i % 3]
        if kind == "v2_json":
            body = {
                "id": f"r{i}",
                "inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": x.tolist()}],
            }

            def check(raw: bytes, headers: dict[str, str], y: np.ndarray = y, i: int = i) -> None:
                answer = json.loads(raw)
                assert answer["id"] == f"r{i}"
                _close("v2 json", answer["outputs"][0]["data"], y)

            valid.append(Case(kind, "POST", "/v2/models/mlp/infer", 200, json.dumps(body).encode(), check=check))
        elif kind == "v2_binary":
            head = {
                "inputs": [
                    {"name": "x", "shape": [rows, 4], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
                ],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            }
            header = json.dumps(head).encode()
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}

            def check(raw: bytes, headers: dict[str, str], y: np.ndarray = y) -> None:
                split = int(headers["Inference-Header-Content-Length"])
                answer = json.loads(raw[:split])
                assert answer["outputs"][0]["parameters"]["binary_data_size"] == y.nbytes
                _close("v2 binary", np.frombuffer(raw[split:], dtype=np.float32), y)

            valid.append(Case(kind, "POST", "/v2/models/mlp/infer", 200, header + x.tobytes(), headers, check=check))
        else:
            body = {"inputs": {"x": x.tolist()}}

            def check(raw: bytes, headers: dict[str, str], y: np.ndarray = y) -> None:
                _close("simple", json.loads(raw)["outputs"]["y"], y)

            valid.append(Case(kind, "POST", "/api/models/mlp/predict", 200, json.dumps(body).encode(), check=check))
    for _ in range(16):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        tensor = (pixels.astype(np.float32) * np.float32(1 / 255)).transpose(2, 0, 1)[None]
        (probs,) = vision.run(None, {"image": tensor})

        def check(raw: bytes, headers: dict[str, str], probs: np.ndarray = probs) -> None:
            answer = json.loads(raw)
            _close("image", answer["outputs"]["probs"], probs)
            assert answer["predictions"][0]["label"] == ["cat", "dog", "owl"][int(probs[0].argmax())]

        valid.append(
            Case("image", "POST", "/api/models/vision/image", 200, form={"image": buffer.getvalue()}, check=check)
        )

    def v2(inputs: list[dict]) -> bytes:
        return json.dumps({"inputs": inputs}).encode()

    good = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    invalid = [
        Case("malformed_json", "POST", "/v2/models/mlp/infer", 400, b'{"inputs": [{"name": "x", '),
        Case("wrong_input_name", "POST", "/v2/models/mlp/infer", 400, v2([good | {"name": "z"}])),
        Case("wrong_shape", "POST", "/v2/models/mlp/infer", 400, v2([good | {"shape": [1, 5], "data": [1] * 5}])),
        Case("data_length", "POST", "/v2/models/mlp/infer", 400, v2([good | {"data": [1, 2, 3]}])),
        Case("wrong_datatype", "POST", "/v2/models/mlp/infer", 400, v2([good | {"datatype": "INT64"}])),
        Case("unknown_model", "POST", "/v2/models/nope/infer", 404, v2([good])),
        Case("unknown_version", "GET", "/v2/models/mlp/versions/9", 404),
        Case(
            "unknown_output",
            "POST",
            "/v2/models/mlp/infer",
            400,
            json.dumps({"inputs": [good], "outputs": [{"name": "q"}]}).encode(),
        ),
        Case("simple_garbage", "POST", "/api/models/mlp/predict", 400, b'"just a string"'),
        Case("image_garbage", "POST", "/api/models/vision/image", 400, form={"image": b"not an image at all"}),
        Case("method", "GET", "/v2/models/mlp/infer", 405),
    ]
    return valid, invalid


async def send(session: aiohttp.ClientSession, url: str, case: Case, tally: Tally) -> None:
    started = time.perf_counter()
    data: Any = case.body or None
    if case.form is not None:
        form = aiohttp.FormData()
        for name, value in case.form.items():
            form.add_field(name, value, filename="upload.png", content_type="image/png")
        data = form
    headers = case.headers or ({"Content-Type": "application/json"} if case.body else {})
    try:
        async with session.request(case.method, url + case.path, data=data, headers=headers) as response:
            raw = await response.read()
            status = response.status
            response_headers = dict(response.headers)
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.statuses[type(exc).__name__] += 1
        tally.wrong.append(f"{case.kind}: {type(exc).__name__}: {exc}")
        return
    tally.latencies.append(time.perf_counter() - started)
    tally.statuses[status] += 1
    tally.kinds[case.kind] += 1
    if status != case.status:
        tally.wrong.append(f"{case.kind}: status {status}, expected {case.status}: {raw[:200]!r}")
        return
    try:
        if case.check is not None:
            case.check(raw, response_headers)
        else:
            assert isinstance(json.loads(raw)["error"], str)
    except Exception as exc:
        tally.wrong.append(f"{case.kind}: {type(exc).__name__}: {str(exc)[:300]}")


async def run_load(url: str, cases: tuple[list[Case], list[Case]], seconds: float, tally: Tally, seed: int) -> None:
    valid, invalid = cases
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(index: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.monotonic() < deadline:
            case = rng.choice(valid) if rng.random() < 0.7 else rng.choice(invalid)
            await send(session, url, case, tally)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        workers: list[Awaitable[None]] = [worker(i, session) for i in range(CONCURRENCY)]
        await asyncio.gather(*workers)


@pytest.fixture(scope="module")
def load_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    repo = tmp_path_factory.mktemp("load_repo")
    return repo, models.write_mlp(repo), models.write_vision(repo)


def test_load_mixed_requests_no_5xx_correct_answers_bounded_memory(load_repository: tuple[Path, Path, Path]) -> None:
    repo, mlp_path, vision_path = load_repository
    cases = build_cases(mlp_path, vision_path, np.random.default_rng(11))
    warmup_seconds = max(3.0, LOAD_SECONDS * WARMUP_SHARE)
    with run_server(repo) as server:
        server: RunningServer
        pid = server.process.pid
        rss_start = rss_mb(pid)
        warmup = Tally()
        asyncio.run(run_load(server.url, cases, warmup_seconds, warmup, seed=1))
        rss_before = rss_mb(pid)
        tally = Tally()
        started = time.perf_counter()
        asyncio.run(run_load(server.url, cases, LOAD_SECONDS, tally, seed=2))
        elapsed = time.perf_counter() - started
        rss_after = rss_mb(pid)
        alive = server.process.poll() is None
    latencies = sorted(tally.latencies) or [0.0]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    valid_kinds = {"v2_json", "v2_binary", "simple", "image"}
    valid_sent = sum(n for kind, n in tally.kinds.items() if kind in valid_kinds)
    record(
        f"load: {LOAD_SECONDS:.0f}s at {CONCURRENCY} connections (+{warmup_seconds:.0f}s warm-up, "
        f"{warmup.sent} requests): {tally.sent} requests ({tally.sent / elapsed:.0f}/s), "
        f"{valid_sent} valid + {tally.sent - valid_sent} invalid, {tally.server_errors} 5xx, "
        f"{len(tally.wrong)} wrong; statuses {dict(tally.statuses)}; "
        f"latency p50 {statistics.median(latencies) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms; "
        f"server RSS {rss_start:.1f} MB at start, {rss_before:.1f} MB after warm-up, {rss_after:.1f} MB after "
        f"({rss_after - rss_before:+.1f} MB, bound +{RSS_BOUND_MB:.0f} MB)"
    )
    assert alive
    assert warmup.server_errors == 0 and not warmup.wrong, warmup.wrong[:5]
    assert tally.server_errors == 0, tally.wrong[:10]
    assert tally.wrong == [], tally.wrong[:10]
    assert valid_sent > 0 and set(tally.kinds) >= valid_kinds
    assert rss_after - rss_before < RSS_BOUND_MB
