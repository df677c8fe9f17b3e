"""Give the heap memory the server has freed back to the operating system (glibc's ``malloc_trim``).

A server's resident memory stays at its high-water mark: glibc keeps freed heap pages for reuse, so one
burst of large requests (32 concurrent 1.5 MB JSON image tensors become tens of millions of Python floats
and their arrays) leaves the process at that size for the rest of its life, and a model's load (protobuf
parsing, graph optimisation) leaves its temporary memory behind too. Container limits and autoscalers see
that figure, not what the process uses. ``malloc_trim(0)`` returns the free pages at the top and inside
the heaps (glibc >= 2.8 releases whole free pages in the middle too).

``HeapTrimmer`` trims once after the models load, then whenever the server has gone quiet after answering
requests: the first check (every ``interval`` seconds) that finds requests answered since the last trim and
none in progress. An idle server is not touched, and a trim never runs in the event loop (it walks the heap
for a few milliseconds). Under a load that never pauses it trims at most every ``busy_interval`` seconds:
a trim holds glibc's arena locks while it walks the heap, so the inference threads' allocations wait, and the
pages it releases are faulted straight back in by the next requests (what trimming under load cost is
measured in docs/runtime.md, "Memory"). It also caps glibc at ``ARENAS`` malloc arenas: each thread that
allocates (the inference pool, onnxruntime's threads) otherwise gets an arena of its own, each holding
its own freed memory.

On a libc without these calls (musl, macOS) it does nothing. ``docs/benchmarks.md`` has the resident
memory measured with and without it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from concurrent.futures import Executor

log = logging.getLogger("runtime.memory")

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols (libc's among them); no ldconfig subprocess at start
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def supported() -> bool:
    """Whether this libc has ``malloc_trim`` and ``mallopt`` (glibc)."""
    return _LIBC is not None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; call before the server starts its threads. False where unsupported."""
    return bool(_LIBC is not None and _LIBC.mallopt(_M_ARENA_MAX, arenas) == 1)


def trim() -> bool:
    """Return free heap memory to the OS now; True when glibc released some."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


class HeapTrimmer:
    """Trims when ``activity()`` (a count of answered requests) has moved and ``busy()`` (requests in progress)
    is false, checking every ``interval`` seconds; while ``busy()`` stays true, at most every ``busy_interval``."""

    def __init__(
        self,
        executor: Executor,
        activity: Callable[[], float],
        busy: Callable[[], bool] = lambda: False,
        *,
        interval: float = 0.5,
        busy_interval: float = 30.0,
    ) -> None:
        self._executor = executor
        self._activity = activity
        self._busy = busy
        self._interval = interval
        self._busy_interval = busy_interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if supported() and self._task is None:
            self._task = asyncio.create_task(self._run(), name="heap trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def trim_now(self) -> None:
        if supported():
            await asyncio.get_running_loop().run_in_executor(self._executor, trim)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        seen = self._activity()
        await self.trim_now()  # what loading the models left behind
        last = loop.time()
        while True:
            await asyncio.sleep(self._interval)
            now = self._activity()
            if now == seen or (self._busy() and loop.time() - last < self._busy_interval):
                continue
            seen = now
            await self.trim_now()
            last = loop.time()
