"""``python -m runtime --repository DIR``: load the models, serve until SIGTERM/SIGINT, exit 0.

On SIGTERM the server stops accepting connections, gives in-flight requests ``--shutdown-grace``
seconds to finish, then closes (batchers stopped, engines closed): ``runtime/server.py``. With
``--workers N`` this process only supervises N such servers (``runtime/workers.py``). A model that cannot be
loaded stops the start with exit status 1 and one log line naming the file and the reason, unless
``--allow-partial`` is given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import disable_created_metrics

from runtime import memory, workers
from runtime.server import serve
from runtime.settings import parse_settings


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").disabled = True  # runtime.access writes the one line per request
    disable_created_metrics()  # Triton exports no *_created series; keep /metrics small
    memory.tune_malloc()  # before any thread starts (runtime/memory.py)
    if settings.workers > 1 and not workers.is_worker():
        return workers.supervise(settings, sys.argv[1:] if argv is None else argv)
    return _event_loop_runner()(serve(settings))


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """``uvloop.run`` when uvloop is installed, else ``asyncio.run``; ``MODELPORT_EVENT_LOOP=asyncio`` forces the
    standard loop. uvloop's transports and scheduling cost less Python per request (docs/benchmarks.md)."""
    if os.environ.get("MODELPORT_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run


if __name__ == "__main__":
    sys.exit(main())
