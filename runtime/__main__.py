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
import sys

from prometheus_client import disable_created_metrics

from runtime import workers
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
    if settings.workers > 1 and not workers.is_worker():
        return workers.supervise(settings, sys.argv[1:] if argv is None else argv)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
