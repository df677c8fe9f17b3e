"""Run the server: the REST app and (from gRPC on) every other protocol, in one event loop.

``serve(settings)`` is the explicit lifecycle that ``web.run_app`` used to hide:

1. ``AppRunner.setup()`` opens the ``ServerState`` (models found; a bad repository stops here, exit 1)
   and the models load in the background;
2. the listeners start; SIGTERM / SIGINT, or a model that fails to load without ``--allow-partial``,
   set ``state.stop_requested``;
3. shutdown: readiness goes false, the listeners stop accepting, in-flight requests get
   ``--shutdown-grace`` to finish, then the state closes (batchers stopped, engines closed).

The exit status is the state's: 0, or 1 after a failed load.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from runtime import workers
from runtime.app import create_app
from runtime.auth import TokenFileError
from runtime.errors import ModelLoadError
from runtime.handlers.common import STATE
from runtime.settings import Settings
from runtime.tls import TLSConfigError, server_context

log = logging.getLogger("runtime")


async def serve(settings: Settings) -> int:
    try:
        app = create_app(settings)
        ssl_context = server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
    except (TokenFileError, TLSConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    state = app[STATE]
    sock = workers.inherited_socket()  # None unless this process is one of --workers N
    if sock is not None:
        workers.prepare_worker(app)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, state.stop_requested.set)
    # aiohttp spends shutdown_timeout twice (waiting for handlers, then for cancelled ones):
    # half each keeps the whole shutdown within --shutdown-grace (plus one running inference).
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace / 2)
    try:
        await runner.setup()
    except ModelLoadError as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        try:
            if sock is not None:
                await web.SockSite(runner, sock, ssl_context=ssl_context).start()
            else:
                await web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context).start()
        except OSError as exc:  # e.g. the port is taken
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
            state.exit_status = 1
            return 1
        scheme = "https" if ssl_context else "http"
        log.info("serving %s on %s://%s:%d", settings.repository, scheme, settings.host, settings.port)
        await state.stop_requested.wait()
    finally:
        state.begin_stopping()
        await runner.cleanup()
    if state.exit_status == 0:
        log.info("stopped")
    else:
        log.info("stopped: a model failed to load (see above; --allow-partial serves the rest)")
    return state.exit_status
