"""Give the heap memory the server has freed back to the operating system (glibc's ``malloc_trim``).

A server's resident memory stays at its high-water mark: glibc keeps freed heap pages for reuse, so one
burst of large requests (32 concurrent 1.5 MB JSON image tensors become tens of millions of Python floats
and their arrays) leaves the process at that size for the rest of its life, and a model's load (protobuf
parsing, graph optimisation) leaves its temporary memory behind too. Container limits and autoscalers see
that figure, not what the process uses. ``malloc_trim(0)`` returns the free pages at the top and inside
the heaps (glibc >= 2.8 releases whole free pages in the middle too).

``HeapTrimmer`` trims once after the models load, then every ``interval`` seconds, but only when requests
were answered since the last trim (an idle server is not touched) and off the event loop (a trim walks
the heap for a few milliseconds). It also caps glibc at ``ARENAS`` malloc arenas: each thread that
allocates (the inference pool, onnxruntime's threads) otherwise gets an arena of its own, each holding
its own freed memory.

Freed pages stay mapped between those trims (``tune_malloc``). glibc's defaults return memory on every
``free``: a block above the mmap threshold is unmapped at once, and free space at the heap's top past the trim
threshold (twice the largest block it has seen) is given back. A request's buffers are that size: a 600 KB
tensor body is allocated and freed several times per request (the socket's chunks, the joined body; a large
answer too), so each request unmapped them and the next one faulted every page back in, hundreds of page
faults per request, which on a virtual machine cost more than the bytes' copies. ``tune_malloc`` sets both
thresholds (which also stops glibc moving them): blocks up to ``MMAP_THRESHOLD`` come from the heap, and up
to ``TRIM_THRESHOLD`` of free heap top stays mapped until ``HeapTrimmer``'s next trim.

On a libc without these calls (musl, macOS) it does nothing. ``docs/benchmarks.md`` has the resident
memory and the page faults measured with and without it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from concurrent.futures import Executor

log = logging.getLogger("runtime.memory")

ARENAS = 2
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below it come from the heap and are reused, not unmapped
TRIM_THRESHOLD = 64 << 20  # free memory at a heap's top that ``free`` leaves mapped (HeapTrimmer returns it)
# glibc's mallopt parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


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


def tune_malloc(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas and keep freed request buffers mapped (module docstring); call before the server
    starts its threads. The bench's reference servers call it too, so that they differ from modelport only in
    what they leave out. False where unsupported."""
    if _LIBC is None:
        return False
    settings = ((_M_ARENA_MAX, arenas), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    applied = [_LIBC.mallopt(parameter, value) == 1 for parameter, value in settings]  # each, even after a refusal
    return all(applied)


def trim() -> bool:
    """Return free heap memory to the OS now; True when glibc released some."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


class HeapTrimmer:
    """Trims every ``interval`` seconds while ``activity()`` (a count of answered requests) moves."""

    def __init__(self, executor: Executor, activity: Callable[[], float], interval: float = 2.0) -> None:
        self._executor = executor
        self._activity = activity
        self._interval = interval
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
        seen = self._activity()
        await self.trim_now()  # what loading the models left behind
        while True:
            await asyncio.sleep(self._interval)
            now = self._activity()
            if now != seen:
                seen = now
                await self.trim_now()
