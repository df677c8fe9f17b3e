"""Run the server: the REST app and the gRPC server over one data plane, in one event loop.

``serve(settings)`` is the explicit lifecycle that ``web.run_app`` used to hide:

1. ``AppRunner.setup()`` opens the ``ServerState`` (models found; a bad repository stops here, exit 1)
   and the models load in the background;
2. the listeners start (REST on --port, gRPC on --grpc-port unless it is 0); SIGTERM / SIGINT, or
   a model that fails to load without ``--allow-partial``, set ``state.stop_requested``;
3. shutdown: readiness goes false, both protocols stop accepting, in-flight requests and calls get
   ``--shutdown-grace`` to finish (side by side), then the state closes (batchers stopped, engines
   closed).

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
from runtime.handlers.common import ADMIN_ENABLED, DATAPLANE, STATE, TOKENS
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
    grpc_server = None
    try:
        try:
            if sock is not None:
                await web.SockSite(runner, sock, ssl_context=ssl_context).start()
            else:
                await web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context).start()
        except OSError as exc:  # e.g. the port is taken
            log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
            return 1
        scheme = "https" if ssl_context else "http"
        log.info("serving %s on %s://%s:%d", settings.repository, scheme, settings.host, settings.port)
        if settings.grpc_port:
            from runtime.grpc_server import GrpcServer  # imported only when gRPC is on

            grpc_server = GrpcServer(state, app[DATAPLANE], app[TOKENS], app[ADMIN_ENABLED])
            try:
                await grpc_server.start()
            except OSError as exc:
                log.error("cannot listen for gRPC on %s:%d: %s", settings.host, settings.grpc_port, exc)
                grpc_server = None
                return 1
            log.info("serving V2 gRPC on %s:%d%s", settings.host, settings.grpc_port, " (TLS)" if ssl_context else "")
        await state.stop_requested.wait()
    finally:
        state.begin_stopping()
        if grpc_server is not None:  # drains alongside REST; the state's close waits for it
            state.drain(asyncio.create_task(grpc_server.stop(settings.shutdown_grace), name="grpc stop"))
        await runner.cleanup()
    if state.exit_status == 0:
        log.info("stopped")
    else:
        log.info("stopped: a model failed to load (see above; --allow-partial serves the rest)")
    return state.exit_status
