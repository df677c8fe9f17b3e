"""The server's state, typed, with an explicit lifecycle: LOADING -> READY -> STOPPING (or FAILED).

``ServerState`` owns the settings, the model repository (the registry every protocol reads through
``runtime.dataplane.DataPlane``), model control (``runtime/control.py``: load, reload, unload, poll),
the metrics and the thread pool. ``open()`` finds the models and
loads them in the background, so liveness answers at once and readiness once every model is warmed
up; a model that fails to load without ``--allow-partial`` moves the state to FAILED with exit
status 1 and asks the server to stop (``stop_requested``), which shuts every protocol down the usual
way. ``close()`` stops the batchers, closes the engines and the pool.

Protocols that report readiness themselves (the gRPC health service) subscribe to phase changes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from runtime.batching import Batcher
from runtime.codecs.image import image_preprocessing
from runtime.control import ModelControl
from runtime.engines import Engine, EngineOptions
from runtime.memory import HeapTrimmer
from runtime.metrics import Metrics
from runtime.repository import LoadedModel, ModelVersion, Repository
from runtime.settings import Settings

log = logging.getLogger("runtime")
access_log = logging.getLogger("runtime.access")

SERVICE_THREADS = 4  # the shared pool's: model loads and closes (one per model being loaded), heap trims
DEFAULT_MERGE_ROWS = 256  # batching cap for models that accept any number of rows (PMML's -1)


class Phase(enum.Enum):
    LOADING = "loading"  # live; models loading (each serves as soon as it is warmed up)
    READY = "ready"  # every model loaded (or, with --allow-partial, tried)
    FAILED = "failed"  # a model failed to load without --allow-partial: stopping with exit status 1
    STOPPING = "stopping"  # SIGTERM: not ready, in-flight requests finish


def engine_options(settings: Settings) -> EngineOptions:
    return EngineOptions(
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        graph_optimization=settings.graph_optimization,
    )


class ServerState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository = Repository(
            settings.repository,
            engine_options(settings),
            settings.models,
            all_versions=settings.all_versions,
            model_name=settings.model_name,
        )
        self.control = ModelControl(
            self.repository,
            self._executor,
            self._attach,
            self._detach,
            drain_timeout=settings.request_timeout or 60.0,
        )
        self.metrics = Metrics()
        self.executor: ThreadPoolExecutor | None = None  # model loads and closes, heap trims
        self.decode_executor: ThreadPoolExecutor | None = None  # image decoding (runtime/codecs/image.py)
        self.trimmer: HeapTrimmer | None = None  # returns freed heap to the OS once the models are loaded
        # requests and calls being handled right now, every protocol (REST's middleware, gRPC's _Rpc): one means
        # the request asking is alone, so its model may run on the event loop (runtime/batching.py, "Lone requests")
        self.in_progress = 0
        self.phase = Phase.LOADING
        self.exit_status = 0
        self.stop_requested = asyncio.Event()  # set when the server should shut down (load failure)
        self._listeners: list[Callable[[Phase], None]] = []
        self._loading: asyncio.Task | None = None
        self._draining: list[asyncio.Task] = []

    # ---- requests -------------------------------------------------------------------------------
    def answered(self, method: str, path: str, model: str, status: object, started: float) -> None:
        """A request or call counted in ``in_progress`` is done: uncount it and write its access log line, in the
        one format both protocols share (``started``: its ``time.perf_counter()`` at arrival)."""
        self.in_progress -= 1
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s model=%s status=%s duration_ms=%.2f",
                method,
                path,
                model,
                status,
                (time.perf_counter() - started) * 1e3,
            )

    # ---- phase ----------------------------------------------------------------------------------
    def ready(self) -> bool:
        if self.phase is not Phase.READY:
            return False
        return self.settings.allow_partial or all(entry.ready for entry in self.repository.entries())

    def subscribe(self, listener: Callable[[Phase], None]) -> None:
        """Call ``listener(phase)`` now and on every phase change."""
        self._listeners.append(listener)
        listener(self.phase)

    def set_phase(self, phase: Phase) -> None:
        if phase is self.phase:
            return
        self.phase = phase
        for listener in self._listeners:
            listener(phase)

    def begin_stopping(self) -> None:
        """Readiness goes false at once, so load balancers stop sending while in-flight requests finish."""
        if self.phase is not Phase.FAILED:
            self.set_phase(Phase.STOPPING)

    # ---- open / close ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Discover the models (raises ``ModelLoadError`` when there is nothing to serve), then load them
        in the background; poll mode then rescans the repository."""
        settings = self.settings
        repository = self.repository
        if settings.model_control_mode == "explicit":  # only --load-model at start; an unknown one stops it
            repository.discover(settings.load_models, allow_partial=settings.allow_partial)
        else:  # nothing to serve (bad repository, unknown --model) stops the start here
            repository.discover(allow_partial=settings.allow_partial)
        # loading and closing models and trimming the heap (each model runs in a pool of its own, its batcher's);
        # threads start only when needed
        self.executor = ThreadPoolExecutor(max_workers=SERVICE_THREADS, thread_name_prefix="modelport")
        # image decoding has a pool of its own: in one shared pool, concurrent uploads' decodes can take every
        # thread and a model's next run then waits behind them (reasoned from the pool sizes; not measured apart)
        self.decode_executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="decode")
        self.trimmer = HeapTrimmer(self.executor, self.metrics.answered)
        for entry in repository.entries():
            self.metrics.model(entry.name, entry.version)  # every model appears in /metrics from the start
        self._loading = asyncio.create_task(self._load_all(), name="load models")

    def drain(self, task: asyncio.Task) -> None:
        """A protocol's own shutdown (gRPC's in-flight calls finishing): ``close`` awaits it before the
        batchers stop, so those calls still have their models."""
        self._draining.append(task)

    async def close(self) -> None:
        self.begin_stopping()
        await asyncio.gather(*self._draining, return_exceptions=True)
        if self._loading is not None:
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        if self.trimmer is not None:
            await self.trimmer.stop()
        entries = self.repository.entries()
        await asyncio.gather(*(e.loaded.batcher.stop() for e in entries if e.loaded is not None and not e.closed))
        self.repository.close()
        for pool in (self.executor, self.decode_executor):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    async def _load_all(self) -> None:
        """Load each model in the thread pool, one at a time; each serves as soon as it is warmed up."""
        loop = asyncio.get_running_loop()
        for entry in self.repository.entries():
            engine, error = await loop.run_in_executor(self.executor, self.repository.build, entry)
            self.repository.install(entry, self._activate(entry, engine) if engine is not None else None, error)
            if error is not None and self.settings.allow_partial:
                log.error("model %s version %s not loaded (serving the others): %s", entry.name, entry.version, error)
            elif error is not None:
                log.error("cannot start: %s", error)
                self.exit_status = 1
                self.set_phase(Phase.FAILED)
                self.stop_requested.set()
                return
        self.set_phase(Phase.READY)
        if self.trimmer is not None:
            self.trimmer.start()
        if self.settings.model_control_mode == "poll":
            for name in self.repository.models:
                self.control.remember(name)
            await self.control.poll_forever(self.settings.repository_poll_secs)

    def _executor(self) -> ThreadPoolExecutor:
        assert self.executor is not None, "the state is not open"
        return self.executor

    def _attach(self, entry: ModelVersion, engine: Engine) -> None:
        """Model control's hook: a reloaded version starts serving."""
        self.repository.install(entry, self._activate(entry, engine), None)

    async def _detach(self, entry: ModelVersion) -> None:
        """Model control's hook: a retired, drained version stops its batcher (control closes the engine)."""
        if entry.loaded is not None:
            await entry.loaded.batcher.stop()

    def _activate(self, entry: ModelVersion, engine: Engine) -> LoadedModel:
        """Everything a request needs, resolved once: the batcher (started) and the image preprocessing."""
        manifest = engine.manifest
        settings = self.settings
        model_cap = manifest.max_batch_size if manifest.max_batch_size > 0 else None
        max_batch = settings.max_batch_size or model_cap or DEFAULT_MERGE_ROWS
        if model_cap is not None:
            max_batch = min(max_batch, model_cap)
        metrics = self.metrics.model(entry.name, entry.version)
        batcher = Batcher(
            engine,
            metrics,
            max_batch=max_batch,
            delay_s=settings.batch_delay_ms / 1000.0,
            max_queue=settings.max_queue,
            instances=settings.instances or engine.concurrency,
        )
        batcher.start()
        return LoadedModel(
            name=entry.name,
            version=entry.version,
            format=entry.format,
            manifest=manifest,
            engine=engine,
            batcher=batcher,
            metrics=metrics,
            image=image_preprocessing(manifest) if entry.format == "onnx" else None,
            entry=entry,
        )
