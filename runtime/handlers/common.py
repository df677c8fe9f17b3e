"""What every protocol handler shares: the app's state keys and the one path into a model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiohttp import web

from runtime.codecs.v2_json import dumps
from runtime.control import ModelControl
from runtime.errors import BadRequest, ModelportError
from runtime.metrics import Metrics
from runtime.repository import ModelVersion, Repository
from runtime.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REPOSITORY = web.AppKey("repository", Repository)
METRICS = web.AppKey("metrics", Metrics)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
CONTROL = web.AppKey("control", ModelControl)
# {"ready": bool, "exit_status": int}: ready once every model loaded, false again on shutdown
READY = web.AppKey("ready", dict)

STARTED = "modelport.started"  # request key: time.perf_counter() at arrival
DEADLINE = "modelport.deadline"  # request key: loop time after which the request gets 504
MODEL = "modelport.model"  # request key: the model name, for the access log


def json_response(value: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(value), status=status, content_type="application/json", headers=headers)


async def read_body(request: web.Request) -> bytes:
    """The whole body; aiohttp enforces ``client_max_size`` (413) while reading."""
    return await request.read()


def model_entry(request: web.Request, name: str, version: str | None = None) -> ModelVersion:
    request[MODEL] = name
    return request.app[REPOSITORY].get(name, version)


def check_outputs(entry: ModelVersion, outputs: Sequence[str] | None) -> None:
    if not outputs:
        return
    manifest = entry.require_engine().manifest
    for name in outputs:
        if manifest.output(name) is None:
            known = ", ".join(o.name for o in manifest.outputs)
            raise BadRequest(f"model {entry.name!r} has no output {name!r}; its outputs are: {known}")


async def infer(
    request: web.Request, entry: ModelVersion, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None
) -> dict[str, np.ndarray]:
    """Validate, queue, run; count success/failure and the request duration for ``/metrics``.

    A reload may have retired ``entry`` since the handler looked it up (while the body was read): the
    request then runs on the model's current entry. ``inflight`` tells the reload when the old entry
    is free to close (no await between choosing the entry and counting it)."""
    entry = request.app[REPOSITORY].current(entry, request.match_info.get("version"))
    metrics = request.app[METRICS].model(entry.name, entry.version)
    entry.inflight += 1
    try:
        engine = entry.require_engine()
        check_outputs(entry, outputs)
        checked = engine.validate(inputs)
        result = await entry.batcher.infer(checked, outputs, request.get(DEADLINE))  # type: ignore[union-attr]
    except ModelportError:
        metrics.failure.inc()
        raise
    except asyncio.CancelledError:
        metrics.failure.inc()
        raise
    finally:
        entry.inflight -= 1
    metrics.success.inc()
    metrics.request_us.observe((time.perf_counter() - request[STARTED]) * 1e6)
    return result
