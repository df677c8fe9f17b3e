"""``python -m runtime --repository DIR``: load the models, serve until SIGTERM/SIGINT, exit 0.

On SIGTERM aiohttp stops accepting connections, gives in-flight requests ``--shutdown-grace``
seconds to finish, then runs the cleanup (batchers stopped, engines closed). A model that cannot be
loaded stops the start with exit status 1 and one log line naming the file and the reason, unless
``--allow-partial`` is given.
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web
from prometheus_client import disable_created_metrics

from runtime import workers
from runtime.app import create_app
from runtime.auth import TokenFileError
from runtime.errors import ModelLoadError
from runtime.handlers.common import READY
from runtime.settings import parse_settings
from runtime.tls import TLSConfigError, server_context

log = logging.getLogger("runtime")


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
    sock = workers.inherited_socket()  # None unless this process is one of --workers N
    try:
        app = create_app(settings)
        ssl_context = server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
    except (TokenFileError, TLSConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    scheme = "https" if ssl_context else "http"
    if sock is not None:
        workers.prepare_worker(app)
    log.info("serving %s on %s://%s:%d", settings.repository, scheme, settings.host, settings.port)
    try:
        web.run_app(
            app,
            host=None if sock else settings.host,
            port=None if sock else settings.port,
            sock=sock,
            ssl_context=ssl_context,
            # aiohttp spends shutdown_timeout twice (waiting for handlers, then for cancelled ones):
            # half each keeps the whole shutdown within --shutdown-grace (plus one running inference).
            shutdown_timeout=settings.shutdown_grace / 2,
            access_log=None,
            print=None,
        )
    except ModelLoadError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    status = app[READY]["exit_status"]
    log.info(
        "stopped" if status == 0 else "stopped: a model failed to load (see above; --allow-partial serves the rest)"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
