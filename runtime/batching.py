"""Per-model request queue with adaptive batching, a queue bound and per-request deadlines.

Every inference goes through its model's ``Batcher``: requests wait in one asyncio queue, and
workers take them off, run the engine in the model's own thread pool and hand each request its slice of
the answer. When a worker finds more compatible requests already waiting (same input names, dtypes and
trailing shapes, same output selection) it concatenates them along axis 0, up to ``max_batch`` rows, and
runs them as one batch; with ``delay`` > 0 it also waits that long for more.
A model without a batch axis (``max_batch_size`` 0, or any tensor whose first axis is fixed) is never
merged; ``max_batch_size`` -1 (PMML: any number of rows) is merged up to the server's cap.

The pool has ``instances`` threads: that many runs at once. A model that does not merge has twice as many
workers as threads, so one request waits in the pool's own queue behind each run and the thread starts it
the moment the run ends. With one worker per thread, the thread would sit idle until the event loop woke,
resumed the worker and handed over the next request; on busy cores that wait is a measurable share of a
model's throughput (docs/benchmarks.md). A merging model keeps one worker per thread: a worker that took
requests early would merge fewer of them.

Past ``max_queue`` requests waiting for a worker a new one gets 503 + Retry-After instead of queueing, and a
request whose deadline passes gets 504 (and is dropped if it has not run yet, in the pool's queue too).

Models whose runs take well under a millisecond (a small MLP) run on the event loop itself: handing them to
the thread pool costs two thread switches and a GIL hand-over per batch, several times the model (py-spy
under wrk showed the pool hand-off as the largest cost; bench/notes.md has the profile). The decision
follows a running average of the measured compute time, so a model that gets slower moves back to the
pool. When nothing is queued and no worker is running, such a model runs in the request's own task
(``_run_now``): no queue, future or task switch.

Lone requests. A request that is the only one the server is handling (``ServerState.in_progress``, every
protocol counted, after one turn of the loop so that requests that arrived together count: ``DataPlane._alone``)
on an idle model also runs in its own task when it is one row of at most
``LONE_MAX_ELEMENTS`` elements, the model's runs average below ``LONE_BELOW_S`` and its deadline, if any, is
more than two such runs away. Nothing else can be waiting for the loop, so blocking it costs nobody anything,
while the hand-off to a pool thread and back costs two thread wake-ups, which on a virtual machine are slow
after a run of a few milliseconds (a sleeping vCPU wakes slowly; figures in docs/runtime.md, "Batching").
With concurrent requests the pool keeps the loop free to read and decode the next requests while the model
runs. A client that connects during a lone run waits for it: at most about ``LONE_BELOW_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from runtime.engines import Engine
from runtime.errors import DeadlineExceeded, InferenceError, ModelportError, Unavailable
from runtime.metrics import ModelMetrics

log = logging.getLogger("runtime.batching")

INLINE_BELOW_S = 0.0005  # runs faster than this on average stay on the event loop (see the module docstring)
INLINE_MAX_ELEMENTS = 65_536  # ...and only small inputs, so one unusually large request never blocks the loop
LONE_BELOW_S = 0.025  # a lone request runs on the loop when the model's runs average below this...
LONE_MAX_ELEMENTS = 1 << 20  # ...and it is one row of at most this many elements (see "Lone requests")
QUEUED_PER_THREAD = 1  # a model that does not merge: requests waiting in its pool's queue per pool thread


@dataclass
class _Job:
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None
    future: asyncio.Future
    enqueued: float
    rows: int
    taken: bool = False  # off the queue: picked by a worker, or abandoned by its request

    def compatible(self, other: _Job) -> bool:
        if self.outputs != other.outputs or self.inputs.keys() != other.inputs.keys():
            return False
        for name, array in self.inputs.items():
            theirs = other.inputs[name]
            if array.dtype != theirs.dtype or array.shape[1:] != theirs.shape[1:]:
                return False
        return True


_Ran = tuple[dict[str, np.ndarray], float, float]  # a run's outputs, its start (perf_counter) and its seconds


def _elements(inputs: dict[str, np.ndarray]) -> int:
    size = 0
    for array in inputs.values():  # a loop: cheaper than sum() over a generator, on every request
        size += array.size
    return size


def batchable(engine: Engine) -> bool:
    """True when every input and output has a variable first axis, so requests can be stacked on it."""
    manifest = engine.manifest
    tensors = manifest.inputs + manifest.outputs
    return manifest.max_batch_size != 0 and bool(manifest.inputs) and all(t.shape and t.shape[0] == -1 for t in tensors)


class Batcher:
    def __init__(
        self,
        engine: Engine,
        metrics: ModelMetrics,
        *,
        max_batch: int,
        delay_s: float,
        max_queue: int,
        instances: int = 1,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        # the engine's warm-up measured that a batch is not cheaper per row: merging would only add latency.
        # A batch delay the operator asked for (--batch-delay-ms) means "merge": it overrules the probe, whose
        # few timed runs a busy machine can mislead.
        pays = getattr(engine, "batching_pays", None)
        self.max_batch = max_batch if batchable(engine) and (pays is not False or delay_s > 0) else 1
        self.delay_s = delay_s
        self.max_queue = max_queue
        self.instances = instances
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._waiting = 0  # live jobs in the queue (abandoned ones no longer count toward max_queue)
        self._workers: list[asyncio.Task] = []
        self._name = f"{engine.manifest.name}:{engine.manifest.version}"
        # the model's runs at once; threads start when first needed (a model run only on the loop starts none)
        self.executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"run {self._name}")
        # one request waiting in the pool's queue per thread, unless the model merges (see the module docstring)
        self.worker_count = instances if self.batching else instances * (1 + QUEUED_PER_THREAD)
        # running averages of engine.predict's own time, seeded by the warm-up's one-row run; inf: not measured yet.
        # Each clamps a run at twice its own threshold, so one run slowed by a busy machine moves it little.
        self._compute_s = getattr(engine, "run_seconds", None) or float("inf")  # for INLINE_BELOW_S
        self._run_s = self._compute_s  # for LONE_BELOW_S
        self._busy = 0  # workers between taking a job and answering it
        self._batch_axis = engine.manifest.max_batch_size != 0  # requests' first axis counts rows

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"batcher {self._name}") for _ in range(self.worker_count)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(Unavailable("the server is shutting down", retry_after=1))

    async def infer(
        self,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str] | None,
        deadline: float | None,
        alone: Callable[[], Awaitable[bool]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Queue one validated request and wait for its outputs; ``deadline`` is ``loop.time()``-based.
        ``alone()``: whether the server handles no other request right now (see "Lone requests" above); asked
        only when the answer matters, since finding out may cost a turn of the event loop. None: never alone."""
        if self._waiting >= self.max_queue:
            raise Unavailable(
                f"model {self.engine.manifest.name!r} is overloaded: {self.max_queue} requests already queued",
                retry_after=1,
            )
        rows = self._rows(inputs)
        if self._idle():
            if self._inline(inputs):
                return self._run_now(inputs, outputs, rows)
            # alone() may yield to the loop: the queue must still be idle after it
            if alone is not None and rows <= 1 and self._lone(inputs, deadline) and await alone() and self._idle():
                return self._run_now(inputs, outputs, rows)
        loop = asyncio.get_running_loop()
        job = _Job(inputs, tuple(outputs) if outputs else None, loop.create_future(), time.perf_counter(), rows)
        self._queue.put_nowait(job)
        self._waiting += 1
        self.metrics.pending.inc()
        try:
            if deadline is None:
                return await job.future
            async with asyncio.timeout_at(deadline):
                return await job.future
        except TimeoutError:
            raise DeadlineExceeded(
                f"model {self.engine.manifest.name!r}: no answer within the request deadline (--request-timeout)"
            ) from None
        finally:
            self._take(job)
            self.metrics.pending.dec()

    def inline_now(self, inputs: dict[str, np.ndarray]) -> bool:
        """Whether ``infer`` would run ``inputs`` inline right now (a tiny model on an idle queue): then a caller
        that can answer synchronously calls ``run_now`` instead, and saves ``infer``'s coroutine."""
        return self._idle() and self._inline(inputs)

    def run_now(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
        """Run in the caller, now: after ``inline_now`` said yes, with nothing awaited in between."""
        return self._run_now(inputs, outputs, self._rows(inputs))

    def _rows(self, inputs: dict[str, np.ndarray]) -> int:
        """The request's row count: its first input's first axis when the model has a batch axis, else 1."""
        first = next(iter(inputs.values()), None)
        return int(first.shape[0]) if self._batch_axis and first is not None and first.ndim > 0 else 1

    def _idle(self) -> bool:
        """Nothing queued, no worker running and no batch delay asked for: a run now delays nobody."""
        return not self._waiting and not self._busy and not self.delay_s

    def _inline(self, inputs: dict[str, np.ndarray]) -> bool:
        """Whether a run of ``inputs`` is cheap enough to do on the event loop (see the module docstring)."""
        return self._compute_s < INLINE_BELOW_S and _elements(inputs) <= INLINE_MAX_ELEMENTS

    def _lone(self, inputs: dict[str, np.ndarray], deadline: float | None) -> bool:
        """Whether a lone request's run is short enough for the event loop (see "Lone requests"), and leaves its
        deadline room: a run on the loop cannot be cut short, so a request whose deadline may pass during it
        goes to the pool, which answers 504 / DEADLINE_EXCEEDED at the deadline."""
        if self._run_s >= LONE_BELOW_S:
            return False
        if deadline is not None and deadline - asyncio.get_running_loop().time() < 2 * self._run_s:
            return False
        return _elements(inputs) <= LONE_MAX_ELEMENTS

    def _run_now(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None, rows: int
    ) -> dict[str, np.ndarray]:
        """The fast path of a tiny model, or of a lone request, on an idle queue: run in the caller's task, now.

        Nothing is waiting, no worker is running and no batch delay was asked for, so queueing would only add
        two event-loop turns, a future and a task switch per request (the largest per-request cost py-spy
        showed on the benchmark MLP) and could merge nothing; a deadline cannot pass during a synchronous run."""
        metrics = self.metrics
        metrics.queue_us.observe(0.0)
        try:
            results, _, took = self._predict(inputs, tuple(outputs) if outputs else None)
        except ModelportError:
            raise
        except Exception as exc:
            log.error("model %s: engine raised", self._name, exc_info=exc)
            raise InferenceError(f"model {self.engine.manifest.name!r}: inference failed") from None
        metrics.executed(took * 1e6, rows)
        return results

    def _take(self, job: _Job) -> None:
        if not job.taken:
            job.taken = True
            self._waiting -= 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        carried: _Job | None = None
        while True:
            job = carried if carried is not None else await self._queue.get()
            carried = None
            if job.future.done():  # deadline passed or client gone while queued
                continue
            self._take(job)
            jobs = [job]
            self._busy += 1
            try:
                if self.batching:
                    carried = await self._gather(job, jobs, loop)
                await self._run(jobs, loop)
            except asyncio.CancelledError:  # stopped while holding requests: running, in the pool's queue, or carried
                for held in (*jobs, carried) if carried is not None else jobs:
                    if not held.future.done():
                        held.future.set_exception(Unavailable("the server is shutting down", retry_after=1))
                raise
            finally:
                self._busy -= 1

    async def _gather(self, first: _Job, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> _Job | None:
        """Add waiting compatible requests to ``jobs``; return an incompatible one to run next."""
        rows = first.rows
        until = loop.time() + self.delay_s
        while rows < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = until - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        job = await self._queue.get()
                except TimeoutError:
                    return None
            if job.future.done():
                continue
            if rows + job.rows > self.max_batch or not first.compatible(job):
                return job
            self._take(job)
            jobs.append(job)
            rows += job.rows
        return None

    async def _run(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        if len(jobs) == 1:
            inputs = jobs[0].inputs
        else:
            inputs = {name: np.concatenate([j.inputs[name] for j in jobs]) for name in jobs[0].inputs}
        try:
            if self._inline(inputs):
                ran = self._predict(inputs, jobs[0].outputs)
            else:
                ran = await loop.run_in_executor(self.executor, self._predict_live, jobs, inputs)
                if ran is None:  # every request gave up while waiting in the pool's queue
                    return
        except Exception as exc:
            if not isinstance(exc, ModelportError):
                log.error("model %s: engine raised", self._name, exc_info=exc)
                exc = InferenceError(f"model {self.engine.manifest.name!r}: inference failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        results, started, took = ran
        metrics = self.metrics
        for job in jobs:  # queued: from arrival to the run's start, the wait in the pool's queue included
            metrics.queue_us.observe((started - job.enqueued) * 1e6)
        metrics.executed(took * 1e6, sum(j.rows for j in jobs))
        if len(jobs) == 1:
            if not jobs[0].future.done():
                jobs[0].future.set_result(results)
            return
        self._split(jobs, results)

    def _predict_live(self, jobs: list[_Job], inputs: dict[str, np.ndarray]) -> _Ran | None:
        """``_predict`` in a pool thread, unless every request's deadline passed (or its client went away) while
        it waited in the pool's queue: None then, nothing run. (A future's state is read, never changed, here.)"""
        for job in jobs:
            if not job.future.done():
                return self._predict(inputs, jobs[0].outputs)
        return None

    def _predict(self, inputs: dict[str, np.ndarray], outputs: tuple[str, ...] | None) -> _Ran:
        """``engine.predict`` with its start (``perf_counter``) and duration, timed where it runs (no thread hop
        counted): the queue and compute metrics, and the averages that choose inline, lone or pool."""
        started = time.perf_counter()
        results = self.engine.predict(inputs, outputs)
        took = time.perf_counter() - started
        if self._compute_s == float("inf"):
            self._compute_s = min(took, 2 * INLINE_BELOW_S)
            self._run_s = min(took, 2 * LONE_BELOW_S)
        else:  # one run slowed by a busy machine moves an average by at most 0.1 * its threshold
            self._compute_s = 0.95 * self._compute_s + 0.05 * min(took, 2 * INLINE_BELOW_S)
            self._run_s = 0.95 * self._run_s + 0.05 * min(took, 2 * LONE_BELOW_S)
        return results, started, took

    def _split(self, jobs: list[_Job], results: dict[str, np.ndarray]) -> None:
        total = sum(j.rows for j in jobs)
        bad = [k for k, v in results.items() if v.ndim == 0 or v.shape[0] != total]
        offset = 0
        for job in jobs:
            end = offset + job.rows
            if not job.future.done():
                if bad:
                    job.future.set_exception(
                        InferenceError(f"model {self.engine.manifest.name!r}: output {bad[0]!r} has no batch axis")
                    )
                else:
                    job.future.set_result({k: v[offset:end] for k, v in results.items()})
            offset = end
