"""Lone requests (runtime/batching.py): a request the server handles alone runs its model on the event loop,
with no hand-off to a pool thread; with another request in progress, a run too slow for the loop or more than
one row, it goes to the pool. The count of requests in progress covers REST and gRPC alike."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bundle.manifest import read_manifest
from runtime import batching, dataplane
from runtime.batching import Batcher
from runtime.codecs.image import decode_image
from runtime.dataplane import DataPlane
from runtime.engines import EngineOptions, load_engine
from runtime.metrics import Metrics
from runtime.settings import parse_settings
from runtime.state import ServerState
from tests.runtime import images, models
from tests.support.server import serve_python

ROOT = Path(__file__).resolve().parents[2]

X = np.arange(4, dtype=np.float32).reshape(1, 4)


def _batcher(tmp_path: Path, run_s: float) -> Batcher:
    """A real engine (the tiny MLP) whose measured averages say a run takes ``run_s``."""
    models.save(tmp_path, "m", models.mlp())
    version_dir = tmp_path / "m" / "1"
    engine = load_engine("onnx", version_dir, read_manifest(version_dir), EngineOptions(intra_op_threads=1))
    batcher = Batcher(engine, Metrics().model("m", "1"), max_batch=4, delay_s=0.0, max_queue=8)
    batcher._compute_s = batcher._run_s = run_s
    return batcher


def _finishes_at_once(coroutine) -> tuple[bool, object]:
    """(True, its value) when ``coroutine`` finishes on its first step, never suspending (no pool hand-off);
    else (False, None), and it is closed."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return True, done.value
    coroutine.close()
    return False, None


def _says(answer: bool):
    """An ``alone`` for ``Batcher.infer`` that answers ``answer`` without suspending."""

    async def alone() -> bool:
        return answer

    return alone


class _CountingPool(ThreadPoolExecutor):
    """A real pool that counts the work handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.handed = 0

    def submit(self, *args, **kwargs):  # type: ignore[override]
        self.handed += 1
        return super().submit(*args, **kwargs)


@pytest.mark.parametrize(
    ("run_s", "rows", "lone", "on_the_loop"),
    [
        (0.004, 1, True, True),  # alone, one row, a few milliseconds: on the loop
        (0.004, 1, False, False),  # another request in progress: the pool keeps the loop free
        (0.004, 2, True, False),  # two rows: no bound on the run from the average of one-row runs
        (batching.LONE_BELOW_S * 1.5, 1, True, False),  # too slow to block the loop for
        (0.0001, 1, False, True),  # a tiny model runs on the loop whatever else is going on
    ],
)
def test_which_runs_take_the_event_loop(tmp_path: Path, run_s: float, rows: int, lone: bool, on_the_loop: bool) -> None:
    batcher = _batcher(tmp_path, run_s)
    inputs = {"x": np.repeat(X, rows, axis=0)}

    async def scenario() -> bool:
        batcher.start()
        try:
            return _finishes_at_once(batcher.infer(inputs, None, None, alone=_says(lone)))[0]
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) is on_the_loop


@pytest.mark.parametrize(("seconds_left", "on_the_loop"), [(0.005, False), (1.0, True)])
def test_a_lone_request_whose_deadline_is_near_goes_to_the_pool(
    tmp_path: Path, seconds_left: float, on_the_loop: bool
) -> None:
    """A run on the loop cannot be cut short at the deadline; the pool's answers 504 when it passes."""
    batcher = _batcher(tmp_path, 0.004)

    async def scenario() -> bool:
        batcher.start()
        try:
            deadline = asyncio.get_running_loop().time() + seconds_left
            return _finishes_at_once(batcher.infer({"x": X}, None, deadline, alone=_says(True)))[0]
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) is on_the_loop


def test_an_oversized_lone_request_goes_to_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "LONE_MAX_ELEMENTS", 3)  # the one row has 4 elements
    batcher = _batcher(tmp_path, 0.004)

    async def scenario() -> bool:
        batcher.start()
        try:
            return _finishes_at_once(batcher.infer({"x": X}, None, None, alone=_says(True)))[0]
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) is False


def test_rest_and_grpc_requests_are_counted_and_a_lone_one_runs_on_the_loop(tmp_path: Path) -> None:
    """A real REST and gRPC server in one loop (tests/runtime/lone_scenario.py), a model of a few milliseconds per
    run (too slow for the tiny-model path): each protocol's lone request runs on the loop thread while the server
    counts exactly that request; with another request in progress the run goes to a pool thread; the count
    returns to zero."""
    models.save(tmp_path, "slow", models.slow(5))  # runs well above INLINE_BELOW_S, well below LONE_BELOW_S
    done = subprocess.run(
        [serve_python(), "-m", "tests.runtime.lone_scenario", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runs"] == [[True, 1], [True, 1], [False, 2], [False, 2]]  # REST, gRPC alone; then not alone
    assert result["in_progress_after"] == 0


@pytest.mark.parametrize(
    ("in_progress", "max_pixels", "here"),
    [(1, None, True), (2, None, False), (1, 8 * 8 - 1, False)],
    ids=["lone", "not-lone", "lone-but-too-many-pixels"],
)
def test_a_lone_requests_small_image_is_decoded_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_progress: int, max_pixels: int | None, here: bool
) -> None:
    """The image endpoint and an encoded BYTES tensor alike: a lone request's small image is decoded without a
    hand-off to the decoding pool; otherwise the pool decodes it. Either way the tensor is the same."""
    if max_pixels is not None:
        monkeypatch.setattr(dataplane, "LONE_DECODE_MAX_PIXELS", max_pixels)
    models.build_repository(tmp_path)
    upload = images.png(np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8))

    async def scenario() -> None:
        state = ServerState(parse_settings(["--repository", str(tmp_path), "--model", "cnn"]))
        await state.open()
        try:
            while not state.ready():
                await asyncio.sleep(0.02)
            plane = DataPlane(state)
            model = plane.model("cnn")
            expected = decode_image(upload, model.image, state.settings.max_image_pixels)
            state.decode_executor.shutdown()
            pool = state.decode_executor = _CountingPool()
            state.in_progress = in_progress
            for coroutine in (
                plane.decode_image(model, upload),
                plane._decode_images(model, np.array([upload], dtype=object)),
            ):
                before = pool.handed
                tensor = await coroutine
                assert (pool.handed == before) is here, "handed to the decoding pool" if here else "decoded on the loop"
                np.testing.assert_array_equal(tensor.reshape(expected.shape), expected)
        finally:
            state.in_progress = 0
            await state.close()

    asyncio.run(scenario())


def test_requests_that_arrive_together_are_not_lone(tmp_path: Path) -> None:
    """Requests whose bytes arrive together start one after another in one turn of the loop. The first must not
    count itself alone because the others have not started yet: run on the loop, it would finish before the next
    started, and so on, every request serial on the loop (what the JPEG upload at c=8 did before this test). Two
    such requests, counted as the middleware counts them, both go to the pools; one on its own does not."""
    models.save(tmp_path, "slow", models.slow(5))  # runs well above INLINE_BELOW_S, well below LONE_BELOW_S
    upload = images.png(np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    models.build_repository(tmp_path)

    async def scenario() -> tuple[list[bool], int, list[bool], int]:
        state = ServerState(parse_settings(["--repository", str(tmp_path), "--model", "slow", "--model", "cnn"]))
        await state.open()
        try:
            while not state.ready():
                await asyncio.sleep(0.02)
            plane = DataPlane(state)
            slow, cnn = plane.model("slow"), plane.model("cnn")
            state.decode_executor.shutdown()
            decodes = state.decode_executor = _CountingPool()
            on_loop: list[bool] = []  # per model run: whether it ran on the event loop's thread
            predict = slow.engine.predict

            def recording(*args, **kwargs):
                on_loop.append(threading.current_thread() is threading.main_thread())
                return predict(*args, **kwargs)

            slow.engine.predict = recording
            x = {slow.manifest.inputs[0].name: np.zeros([1, *slow.manifest.inputs[0].shape[1:]], np.float32)}

            async def counted(work: Awaitable) -> None:  # what REST's middleware and gRPC's _Rpc do around it
                state.in_progress += 1
                try:
                    await work
                finally:
                    state.in_progress -= 1

            def decode() -> Awaitable:
                return counted(plane.decode_image(cnn, upload))

            def run() -> Awaitable:
                return counted(plane.run(slow, x, None, started=0.0, deadline=None))

            await decode()
            await run()
            alone = (list(on_loop), decodes.handed)
            on_loop.clear()
            await asyncio.gather(decode(), decode())
            await asyncio.gather(run(), run())  # the batcher may merge the two into one run
            return (*alone, list(on_loop), decodes.handed - alone[1])
        finally:
            await state.close()

    alone_runs, alone_decodes, together_runs, together_decodes = asyncio.run(scenario())
    assert (alone_runs, alone_decodes) == ([True], 0)  # on its own: run and decoded on the loop
    assert together_runs and not any(together_runs)  # together: every run on a pool thread...
    assert together_decodes == 2  # ...and both images decoded in the decoding pool
