"""The per-request fast paths from profiling (issue 15): a tiny model on an idle queue runs in the caller's
task, the per-model input check, the lock-free histograms and the warm-up's batching decision."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bundle.manifest import read_manifest
from runtime.batching import Batcher
from runtime.engines import EngineOptions, load_engine
from runtime.errors import BadRequest
from runtime.metrics import BUCKETS_US, Metrics
from runtime.settings import parse_settings
from runtime.state import ServerState
from runtime.validation import InputCheck, check_inputs
from tests.runtime import models


def _engine(tmp_path: Path, model=None):
    models.save(tmp_path, "m", model or models.mlp())
    version_dir = tmp_path / "m" / "1"
    return load_engine("onnx", version_dir, read_manifest(version_dir), EngineOptions(intra_op_threads=1))


def _batcher(engine, metrics):
    return Batcher(engine, metrics, ThreadPoolExecutor(1), max_batch=4, delay_s=0.0, max_queue=8)


def test_a_tiny_model_on_an_idle_queue_never_suspends(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    metrics = Metrics().model("m", "1")
    x = {"x": np.ones((1, 4), np.float32)}

    async def scenario() -> None:
        batcher = _batcher(engine, metrics)
        batcher.start()
        assert batcher._compute_s < 0.0005  # seeded by the warm-up: the first request takes the fast path
        coroutine = batcher.infer(x, None, None)
        with pytest.raises(StopIteration) as done:  # finished on the first step: no queue, no await
            coroutine.send(None)
        np.testing.assert_allclose(done.value.value["probs"], engine.predict(x)["probs"])
        await batcher.stop()

    asyncio.run(scenario())
    assert metrics.exec_count.value == 1 and metrics.inference_count.value == 1
    assert sum(metrics.queue_us.counts) == 1 and sum(metrics.compute_us.counts) == 1


def test_the_warm_up_decides_whether_batching_pays(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert engine.batching_pays is True  # a tiny model: a batch of 4 costs far less per row
    assert _batcher(engine, Metrics().model("m", "1")).batching
    engine.batching_pays = False  # what a model measured not to gain gets: no merging
    assert not _batcher(engine, Metrics().model("m", "1")).batching
    fixed = _engine(tmp_path / "fixed", models.fixed())
    assert fixed.batching_pays is None  # no batch axis: nothing to decide


@pytest.mark.parametrize(
    "inputs",
    [
        {"x": np.ones((1, 4), np.float64)},
        {"x": np.ones((1, 5), np.float32)},
        {"x": np.ones((1, 4), np.float32), "extra": np.ones((1, 4), np.float32)},
        {},
        {"x": np.ones((100, 4), np.float32)},
    ],
)
def test_the_input_check_refuses_exactly_as_the_generic_one(tmp_path: Path, inputs: dict) -> None:
    manifest = read_manifest(tmp_path / "m" / "1") if (tmp_path / "m").exists() else _engine(tmp_path).manifest
    manifest.max_batch_size = 8
    with pytest.raises(BadRequest) as generic:
        check_inputs(manifest, inputs)
    with pytest.raises(BadRequest) as compiled:
        InputCheck(manifest)(inputs)
    assert str(compiled.value) == str(generic.value)


def test_histograms_export_cumulative_buckets() -> None:
    metrics = Metrics()
    bound = metrics.model("m", "1")
    for value in (50, 100, 101, 7e7):  # 100 is in the le="100.0" bucket; 7e7 only in +Inf
        bound.request_us.observe(value)
    text = metrics.render().decode()
    line = 'nv_inference_request_duration_us_bucket{le="%s",model="m",version="1"}'
    assert f"{line % '100.0'} 2.0" in text
    assert f"{line % '250.0'} 3.0" in text
    assert f"{line % '6e+07'} 3.0" in text and f"{line % '+Inf'} 4.0" in text
    assert 'nv_inference_request_duration_us_count{model="m",version="1"} 4.0' in text
    assert len(BUCKETS_US) == 16


@pytest.mark.parametrize(("args", "instances"), [((), 2), (("--intra-op-threads", "1"), 1), (("--instances", "3"), 3)])
def test_two_runs_at_once_by_default_when_a_run_has_two_threads(tmp_path: Path, args: tuple, instances: int) -> None:
    """--instances 0 (the default) takes the engine's concurrency: an ONNX model whose runs have two intra-op
    threads gets two batcher workers (docs/runtime.md, "Batching"); one thread per run, one worker; an explicit
    --instances wins."""
    models.save(tmp_path, "m", models.mlp())
    settings = parse_settings(["--repository", str(tmp_path), "--intra-op-threads", "2", *args])

    async def scenario() -> int:
        state = ServerState(settings)
        await state.open()
        try:
            while not state.ready():
                await asyncio.sleep(0.02)
            return state.repository.get("m").require_loaded().batcher.instances
        finally:
            await state.close()

    assert asyncio.run(scenario()) == instances


def test_an_engine_says_how_many_runs_at_once_it_serves_best(tmp_path: Path) -> None:
    models.save(tmp_path, "m", models.mlp())
    version_dir = tmp_path / "m" / "1"
    manifest = read_manifest(version_dir)
    two = load_engine("onnx", version_dir, manifest, EngineOptions(intra_op_threads=2))
    one = load_engine("onnx", version_dir, manifest, EngineOptions(intra_op_threads=1))
    assert (two.concurrency, one.concurrency) == (2, 1)
