"""``--workers N``: N server processes behind one port, supervised by a small parent (the pre-fork model).

Why processes: one Python event loop serves a tiny model (an MLP that runs in microseconds) at the speed of
its own per-request Python work, whatever the core count; a second process doubles what is available.
Threads do not (the GIL). For a compute-bound model (MobileNetV2) onnxruntime's intra-op threads already use
every core and more processes only add memory. docs/runtime.md ("Workers or threads") has the measurements.

How: the parent binds the listening socket once (so port 0, "port taken" and privileged ports behave as with
one process), then starts N ``python -m runtime`` children with the same command line that inherit the socket
(``MODELPORT_WORKER_FD``); the kernel hands each new connection to whichever worker accepts it first. The
parent imports no model code and runs no event loop: it only starts, watches and stops its children.

- Each worker loads its own engines; ``--intra-op-threads`` defaults to cores / N (at least 1) so N workers
  do not oversubscribe the cores (an explicit flag or ``MODELPORT_INTRA_OP_THREADS`` wins).
- A worker accepts connections only once its models are loaded, so a restarted worker never answers 503
  while the others are ready (connections wait in the shared backlog meanwhile).
- Metrics: every worker mirrors its numbers into prometheus_client's multiprocess files
  (``PROMETHEUS_MULTIPROC_DIR``, a temporary directory unless set) and ``/metrics`` on any worker reports the
  sum over all workers (runtime/metrics.py). A worker that is killed loses at most its last
  ``FLUSH_INTERVAL_S`` of counts.
- SIGTERM/SIGINT: the parent stops listening and forwards SIGTERM to every worker; each drains its in-flight
  requests within ``--shutdown-grace`` as a single server does; stragglers are killed after that.
- A worker that dies (a signal, the OOM killer, an unexpected exit) is logged and restarted. A worker that
  exits with status 1 could not start (a model failed to load, a bad TLS file): that would fail again, so the
  parent stops the others and exits 1, as one process would. More than ``MAX_RESTARTS`` restarts within
  ``RESTART_WINDOW_S`` also stop the server (a crash loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

from runtime.handlers.common import STATE
from runtime.metrics import FLUSH_INTERVAL_S, MULTIPROCESS_ENV
from runtime.settings import Settings
from runtime.state import Phase

log = logging.getLogger("runtime.workers")

FD_ENV = "MODELPORT_WORKER_FD"  # the inherited listening socket's file descriptor (set only in workers)
ID_ENV = "MODELPORT_WORKER_ID"
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
POLL_S = 0.1


def is_worker() -> bool:
    return FD_ENV in os.environ


def default_intra_op_threads(workers: int) -> int:
    """cores / workers, at least 1: N workers together use each core once."""
    return max(1, (os.cpu_count() or 1) // workers)


# ---- in a worker -------------------------------------------------------------------------------------------
def inherited_socket() -> socket.socket | None:
    """The listening socket the parent passed down, or None when this process is not a worker."""
    fd = os.environ.get(FD_ENV)
    return socket.socket(fileno=int(fd)) if fd else None


def prepare_worker(app: web.Application) -> None:
    """Hold the start until the models are loaded, then flush metrics periodically and once at the end."""
    app.on_startup.append(_wait_until_loaded)
    app.on_startup.append(_start_flusher)
    app.on_cleanup.append(_final_flush)


async def _wait_until_loaded(app: web.Application) -> None:
    # on_startup runs after the app's cleanup context started loading; aiohttp starts accepting after this.
    state = app[STATE]
    while state.phase is Phase.LOADING:
        await asyncio.sleep(0.02)


_FLUSHER = web.AppKey("metrics flusher", asyncio.Task)


async def _start_flusher(app: web.Application) -> None:
    async def flush() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            app[STATE].metrics.flush()

    app[_FLUSHER] = asyncio.create_task(flush(), name="metrics flush")


async def _final_flush(app: web.Application) -> None:
    task = app.get(_FLUSHER)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    app[STATE].metrics.flush()


# ---- in the parent -----------------------------------------------------------------------------------------
@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.workers: list[_Worker] = []
        self.restarts: list[float] = []
        self.stopping = False
        self.sock: socket.socket | None = None
        self.env: dict[str, str] = {}

    def _spawn(self, index: int) -> _Worker:
        assert self.sock is not None
        env = {**self.env, ID_ENV: str(index), FD_ENV: str(self.sock.fileno())}
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime", *self.argv], env=env, pass_fds=(self.sock.fileno(),)
        )
        log.info("worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.stopping:
            log.info(
                "%s: stopping %d workers (each drains its requests)", signal.Signals(signum).name, len(self.workers)
            )
        self.stopping = True

    def run(self) -> int:
        settings = self.settings
        try:
            self.sock = _listen(settings.host, settings.port)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
            return 1
        own_dir = None
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            directory = own_dir = tempfile.mkdtemp(prefix="modelport-metrics-")
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory, MULTIPROCESS_ENV: "1"}
        if settings.intra_op_threads == 0:
            self.env["MODELPORT_INTRA_OP_THREADS"] = str(default_intra_op_threads(settings.workers))
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info(
            "serving %s on %s:%d with %d workers (%s intra-op threads each)",
            settings.repository,
            settings.host,
            self.sock.getsockname()[1],
            settings.workers,
            self.env.get("MODELPORT_INTRA_OP_THREADS", settings.intra_op_threads),
        )
        try:
            self.workers = [self._spawn(i) for i in range(settings.workers)]
            status = self._watch(directory)
        finally:
            self._stop_all()
            if own_dir:
                shutil.rmtree(own_dir, ignore_errors=True)
        log.info("stopped" if status == 0 else "stopped: a worker could not start (see above)")
        return status

    def _watch(self, directory: str) -> int:
        from prometheus_client import multiprocess

        while not self.stopping:
            time.sleep(POLL_S)
            for slot, worker in enumerate(self.workers):
                code = worker.process.poll()
                if code is None or self.stopping:
                    continue
                multiprocess.mark_process_dead(worker.process.pid, directory)  # drop its live gauges
                if code == 1:
                    log.error("worker %d (pid %d) could not start; stopping", worker.index, worker.process.pid)
                    return 1
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(self.restarts) > MAX_RESTARTS:
                    log.error(
                        "worker %d (pid %d) died (%s): more than %d restarts in %.0f s, stopping",
                        worker.index,
                        worker.process.pid,
                        how,
                        MAX_RESTARTS,
                        RESTART_WINDOW_S,
                    )
                    return 1
                log.error("worker %d (pid %d) died (%s); restarting it", worker.index, worker.process.pid, how)
                self.workers[slot] = self._spawn(worker.index)
        return 0

    def _stop_all(self) -> None:
        if self.sock is not None:
            self.sock.close()  # new connections are refused once every worker closed its copy too
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace + 10
        for worker in self.workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time; killing it", worker.index, worker.process.pid)
                worker.process.kill()
                worker.process.wait()


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run ``settings.workers`` workers until SIGTERM/SIGINT; the exit status of the whole server."""
    return Supervisor(settings, argv).run()
