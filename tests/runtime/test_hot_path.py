"""The per-request fast paths from profiling (issue 15): a tiny model on an idle queue runs in the caller's
task, the per-model input check, the lock-free histograms, the warm-up's batching decision, the one-pass V2
JSON decoder and the synchronous answer for a tiny model (``DataPlane.infer_now``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from bundle.manifest import read_manifest
from runtime.app import create_app
from runtime.batching import Batcher
from runtime.codecs import v2_rest
from runtime.dataplane import InferenceRequest
from runtime.engines import EngineOptions, load_engine
from runtime.engines.onnx import SESSION_CONFIG
from runtime.errors import BadRequest, ModelportError
from runtime.handlers.common import DATAPLANE, STATE
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
    return Batcher(engine, metrics, max_batch=4, delay_s=0.0, max_queue=8)


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


def test_the_intra_op_pool_spins_briefly_in_the_server_and_in_the_bench_references(tmp_path: Path) -> None:
    """A bounded spin (runtime/engines/onnx.py, SESSION_CONFIG): not onnxruntime's unbounded default, not none;
    the raw onnxruntime loop and the bare servers that ``make bench`` compares against build the server's options."""
    engine = _engine(tmp_path)
    config = engine.session.get_session_options()
    assert config.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert 0 < int(config.get_session_config_entry("session.intra_op.spin_duration_us")) <= 100
    keys = ("session.intra_op.allow_spinning", "session.intra_op.spin_duration_us")
    assert {key: config.get_session_config_entry(key) for key in keys} == SESSION_CONFIG
    bench = Path(__file__).resolve().parents[2] / "bench"
    for script in ("raw_ort.py", "servers/bare_aiohttp.py", "servers/mlserver_ort.py"):
        text = (bench / script).read_text()
        assert "from runtime.engines.onnx import session_options" in text and "allow_spinning" not in text, script


def _body(value: object) -> bytes:
    return json.dumps(value).encode() if not isinstance(value, bytes) else value


_X = {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2.5, 3], [4, 5, 6e-3]]}
_PLAIN = [  # bodies the one-pass decoder takes
    {"inputs": [_X]},
    {"inputs": [_X], "id": "r-1"},
    {"inputs": [{**_X, "data": [1, 2, 3, 4, 5, 6]}]},  # flat integers for a float tensor
    {"inputs": [{**_X, "datatype": "FP64"}, {**_X, "name": "y", "datatype": "FP16"}]},
    {"inputs": [{**_X, "shape": [0, 3], "data": []}]},
    {"inputs": [{**_X, "data": [[1, True, 3], [4, 5, 6]]}]},  # numpy reads a bool among numbers as one
]
_OTHER = [  # valid or not, these take the general path, which names what is wrong
    {"inputs": [_X], "outputs": [{"name": "probs"}]},
    {"inputs": [_X], "parameters": {"binary_data_output": True}},
    {"inputs": [{**_X, "parameters": {}}]},
    {"inputs": [_X], "id": 7},
    {"inputs": [_X], "id": None},
    {"inputs": [{**_X, "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]}]},
    {"inputs": [{**_X, "datatype": "BYTES", "data": ["a", "b", "c", "d", "e", "f"]}]},
    {"inputs": [{**_X, "datatype": "FP33"}]},
    {"inputs": [{**_X, "data": [[1, 2], [3, 4, 5]]}]},  # ragged
    {"inputs": [{**_X, "data": [1, 2, 3]}]},  # too few values
    {"inputs": [{**_X, "data": [True] * 6}]},
    {"inputs": [{**_X, "data": ["1"] * 6}]},
    {"inputs": [{**_X, "data": [1, None, 3, 4, 5, 6]}]},
    {"inputs": [{**_X, "shape": [2, -3]}]},
    {"inputs": [{**_X, "shape": [2, True, 3]}]},
    {"inputs": [{**_X, "shape": "2x3"}]},
    {"inputs": [{**_X, "name": 5}]},
    {"inputs": [_X, _X]},  # the same name twice
    {"inputs": [{**_X, "shape": [2000, 3000], "data": [0]}]},  # over --max-elements
    {"inputs": []},
    {"inputs": {"x": [1, 2]}},
    [_X],
    {"inputs": [[1, 2, 3]]},
    b"",
    b"{not json",
    b'{"inputs": [' * 40 + b"]" * 40 + b"}",  # deeper than --max-json-depth
]


@pytest.mark.parametrize("value", _PLAIN + _OTHER)
def test_the_one_pass_decoder_returns_what_the_general_one_does(value: object) -> None:
    """``plain_request`` takes the common body and gives up (None) on every other: whenever it answers, its
    answer is the general decoder's, array for array; the common bodies do take it."""
    body, limits = _body(value), (64, 1_000_000)
    plain = v2_rest.plain_request(body, *limits)
    assert (plain is not None) == (value in _PLAIN)
    try:
        general = v2_rest.decode_general(body, None, *limits)
    except ModelportError as exc:
        assert plain is None, f"the one-pass decoder accepted what the general one refuses: {exc}"
        with pytest.raises(type(exc), match=re.escape(str(exc))):  # and the request gets the general message
            v2_rest.decode_request(body, None, *limits)
        return
    if plain is None:
        return
    assert plain.request.id == general.request.id and plain.request.outputs == general.request.outputs
    assert plain.request.parameters == general.request.parameters
    assert (plain.binary_default, plain.binary_by_name) == (general.binary_default, general.binary_by_name)
    assert plain.request.inputs.keys() == general.request.inputs.keys()
    for name, array in general.request.inputs.items():
        assert plain.request.inputs[name].dtype == array.dtype and plain.request.inputs[name].shape == array.shape
        np.testing.assert_array_equal(plain.request.inputs[name], array)


def test_a_tiny_models_request_is_answered_in_one_synchronous_call(tmp_path: Path) -> None:
    """``DataPlane.infer_now``: the answer and the metrics of ``infer``, without a coroutine, on an idle queue;
    None, with nothing run or counted, when the request must queue; a refused input counted as a failure."""
    models.save(tmp_path, "m", models.mlp())
    x = np.arange(8, dtype=np.float32).reshape(2, 4)

    async def scenario() -> None:
        app = create_app(parse_settings(["--repository", str(tmp_path), "--intra-op-threads", "1"]))
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            plane = app[DATAPLANE]
            while not app[STATE].ready():
                await asyncio.sleep(0.02)
            model = plane.model("m", None)
            metrics = model.metrics
            answer = plane.infer_now(model, InferenceRequest({"x": x}, id="r1"), started=time.perf_counter())
            assert answer is not None and answer.id == "r1" and [n for n, _ in answer.outputs] == ["probs"]
            np.testing.assert_array_equal(answer.outputs[0][1], model.engine.predict({"x": x})["probs"])
            assert (metrics.success.value, metrics.exec_count.value, metrics.inference_count.value) == (1, 1, 2)
            assert sum(metrics.request_us.counts) == 1
            model.batcher._busy = 1  # a worker is running: this request would queue
            assert plane.infer_now(model, InferenceRequest({"x": x}), started=time.perf_counter()) is None
            model.batcher._busy = 0
            assert (metrics.success.value, metrics.failure.value, metrics.exec_count.value) == (1, 0, 1)
            with pytest.raises(BadRequest, match="'x'"):
                plane.infer_now(model, InferenceRequest({"x": x[:, :3]}), started=time.perf_counter())
            assert metrics.failure.value == 1
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def _one_thread_batcher(tmp_path: Path) -> tuple[Batcher, list[tuple[float, float]]]:
    """A model of tens of milliseconds per run that does not merge, one run at a time (one pool thread), and the
    (start, end) of every run it makes."""
    engine = _engine(tmp_path, models.slow(200))
    engine.batching_pays = False  # as MobileNetV2 measures on 2 cores: no merging
    spans: list[tuple[float, float]] = []
    predict = engine.predict

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return predict(*args, **kwargs)
        finally:
            spans.append((started, time.perf_counter()))

    engine.predict = timed
    batcher = Batcher(engine, Metrics().model("m", "1"), max_batch=4, delay_s=0.0, max_queue=8, instances=1)
    assert not batcher.batching and batcher.worker_count == 2  # twice as many workers as pool threads
    return batcher, spans


async def _until_handed(batcher: Batcher, jobs: int) -> None:
    """Turns of the loop until ``jobs`` requests were taken by workers and handed to the pool."""
    for _ in range(100):
        if batcher._busy == jobs:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{batcher._busy} of {jobs} requests were handed to the pool")


def test_a_pool_thread_starts_the_next_request_without_the_event_loop(tmp_path: Path) -> None:
    """A model that does not merge keeps a request waiting in its pool's own queue: when a run ends, the thread
    starts the next one straight away. With the event loop blocked for six runs' time, both requests still
    run to the end; with one worker per thread the second would wait for the loop to hand it over."""
    batcher, spans = _one_thread_batcher(tmp_path)
    x = {"x": np.ones((1, 4), np.float32)}
    run_s = batcher.engine.run_seconds

    async def scenario() -> float:
        batcher.start()
        try:
            requests = [asyncio.ensure_future(batcher.infer(x, None, None)) for _ in range(2)]
            await _until_handed(batcher, 2)
            time.sleep(max(6 * run_s, 0.5))  # the loop is busy: nothing on it runs meanwhile
            unblocked = time.perf_counter()
            for answer in await asyncio.gather(*requests):
                assert answer["y"].shape == (1, 4)
            return unblocked
        finally:
            await batcher.stop()

    unblocked = asyncio.run(scenario())
    assert len(spans) == 2
    assert max(end for _, end in spans) < unblocked, "the second run waited for the event loop"


def test_a_request_whose_deadline_passes_in_the_pool_queue_is_not_run(tmp_path: Path) -> None:
    """The second request waits in the pool's queue behind the first; its deadline passes there (504), and the
    thread then skips it instead of spending a run on an answer nobody will read."""
    batcher, spans = _one_thread_batcher(tmp_path)
    x = {"x": np.ones((1, 4), np.float32)}
    run_s = batcher.engine.run_seconds

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.infer(x, None, None))
            late = asyncio.ensure_future(batcher.infer(x, None, loop.time() + run_s / 4))
            await _until_handed(batcher, 2)
            with pytest.raises(ModelportError) as raised:
                await late
            assert raised.value.status == 504
            await first
            await asyncio.sleep(max(2 * run_s, 0.1))  # the thread has reached the late request's turn
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert len(spans) == 1, f"{len(spans)} runs: the abandoned request ran"


def test_requests_a_stopped_batcher_holds_are_answered(tmp_path: Path) -> None:
    """Stopping a model (shutdown) while one request runs and one waits in the pool's queue answers both with
    503 at once; neither is left waiting for a run that will never report back."""
    batcher, _ = _one_thread_batcher(tmp_path)
    x = {"x": np.ones((1, 4), np.float32)}

    async def scenario() -> list:
        batcher.start()
        requests = [asyncio.ensure_future(batcher.infer(x, None, None)) for _ in range(2)]
        await _until_handed(batcher, 2)
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 5)

    answers = asyncio.run(scenario())
    assert [getattr(a, "status", a) for a in answers] == [503, 503]


def test_a_request_carried_to_the_next_batch_is_answered_when_the_batcher_stops(tmp_path: Path) -> None:
    """A merging worker that met a request it cannot merge carries it to its next batch. Stopped while the batch
    before it runs, the batcher answers the carried request 503 as well as the running ones."""
    engine = _engine(tmp_path, models.slow(200))
    batcher = Batcher(engine, Metrics().model("m", "1"), max_batch=4, delay_s=0.0, max_queue=8, instances=1)
    assert batcher.batching and batcher.worker_count == 1
    x = {"x": np.ones((1, 4), np.float32)}

    async def scenario() -> list:
        batcher.start()
        first = asyncio.ensure_future(batcher.infer(x, None, None))
        await _until_handed(batcher, 1)
        # queued behind it: two requests that cannot merge (one asks for every output, one names it)
        queued = [asyncio.ensure_future(batcher.infer(x, outputs, None)) for outputs in (None, ["y"])]
        for _ in range(1000):  # until the first run ended and the worker took both: one to run, one carried
            if first.done() and batcher._queue.empty():
                break
            await asyncio.sleep(0.005)
        assert first.done() and batcher._queue.empty() and batcher._busy == 1
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 5)

    answers = asyncio.run(scenario())
    assert [getattr(a, "status", a) for a in answers] == [503, 503]
