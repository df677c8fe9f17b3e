"""The protocol-neutral data plane: what every protocol does, written once.

REST (``runtime/handlers``) and gRPC (``runtime/grpc_server.py``) are thin adapters: they turn the
wire into an ``InferenceRequest`` or a name and version, call ``DataPlane``, and encode what comes
back. The data plane

- resolves the addressed model once per request, to one immutable ``LoadedModel`` (manifest, engine,
  batcher, image preprocessing, metrics), raising ``NotFound`` for an unknown name or version and
  ``Unavailable`` while it loads or after its load failed;
- owns inference (encoded images decoded off the event loop, output selection checked, inputs
  validated, queued on the model's batcher with the request's deadline, metrics counted), metadata,
  readiness and the model listing.

It knows no HTTP and no protobuf, and it raises only ``runtime.errors`` exceptions: each protocol maps
them to its own status codes in one place (``ModelportError.status`` and ``.grpc_code``).

Models are looked up in the ``Repository`` on every call, so a registry that swaps a version's
``LoadedModel`` (a reload) is seen by the next request, while requests holding the old one finish on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.codecs.image import decode_batch, decode_image, decode_opened, open_batch, open_image
from runtime.errors import BadRequest, ModelLoadError, ModelportError
from runtime.repository import LoadedModel, ModelVersion
from runtime.state import ServerState

if TYPE_CHECKING:
    from PIL import Image

    from bundle.manifest import ImagePreprocessing

# A lone request (the only one the server is handling: runtime/batching.py, "Lone requests") decodes its one image
# on the event loop, saving the decoding pool's two thread wake-ups, when the upload is at most this many bytes
# and pixels (a photo of a few megapixels at most); anything larger still goes to the pool.
LONE_DECODE_MAX_BYTES = 1 << 21
LONE_DECODE_MAX_PIXELS = 1 << 21

SERVER_NAME = "modelport"
SERVER_VERSION = "0.1.0"  # pyproject.toml's version
EXTENSIONS = ["binary_tensor_data", "metrics", "model_repository"]  # as Triton names them


@dataclass
class InferenceRequest:
    """A decoded inference request, whatever protocol it came in."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None  # requested output names in order; None: every output, manifest order
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[tuple[str, np.ndarray]]  # in the requested order (or the manifest's)
    id: str | None = None


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]

    def as_dict(self) -> dict[str, Any]:
        def tensors(specs: list[TensorMetadata]) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in specs]

        return {
            "name": self.name,
            "versions": self.versions,
            "platform": self.platform,
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
        }


@dataclass(frozen=True)
class ModelStatus:
    """One version's readiness, as both protocols report it (``error``: why it is not ready)."""

    name: str
    version: str
    ready: bool
    error: str | None = None


class DataPlane:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    # ---- server -------------------------------------------------------------------------------
    def live(self) -> bool:
        return True  # answering at all is liveness

    def ready(self) -> bool:
        return self.state.ready()

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    # ---- models -------------------------------------------------------------------------------
    def entry(self, name: str, version: str | None = None) -> ModelVersion:
        """The repository's version entry, ready or not (``NotFound`` when unknown)."""
        return self.state.repository.get(name, version or None)

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The one lookup of a request: the ready model, or ``NotFound`` / ``Unavailable``."""
        return self.entry(name, version).require_loaded()

    def model_status(self, name: str, version: str | None = None) -> ModelStatus:
        entry = self.entry(name, version)
        if entry.ready:
            return ModelStatus(entry.name, entry.version, True)
        reason = f"model {entry.name!r} version {entry.version} is not ready: {entry.error or 'loading'}"
        return ModelStatus(entry.name, entry.version, False, reason)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        model = self.model(name, version)
        manifest = model.manifest
        return ModelMetadata(
            name=model.name,
            versions=self.state.repository.versions(model.name),
            platform=model.platform,
            inputs=[TensorMetadata(s.name, s.datatype, list(s.shape)) for s in manifest.inputs],
            outputs=[TensorMetadata(s.name, s.datatype, list(s.shape)) for s in manifest.outputs],
        )

    def models(self) -> list[ModelVersion]:
        """The default version of every served model, in repository order."""
        repository = self.state.repository
        return [repository.get(name) for name in repository.models]

    def versions(self, name: str) -> list[str]:
        return self.state.repository.versions(name)

    # ---- model control (Triton's repository extension; the admin scope is checked by each protocol) ----
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """``[{"name", "version", "state", "reason"}]`` for every model in the repository."""
        return self.state.control.index(ready_only=ready_only)

    async def repository_load(self, name: str, parameters: Sequence[str] = ()) -> None:
        """Load or reload ``name`` (explicit mode only); ``BadRequest`` with the reason when it fails,
        the old versions still serving. ``parameters``: the names of the request's load parameters."""
        self._require_explicit("load")
        refused = [k for k in parameters if k == "config" or k.startswith("file:")]
        if refused:
            raise BadRequest(f"load parameter {refused[0]!r} is not supported: put the model in the repository")
        try:
            await self.state.control.load(name)
        except ModelLoadError as exc:
            raise BadRequest(str(exc)) from None

    async def repository_unload(self, name: str) -> None:
        """Unload ``name`` once its requests in flight have finished (explicit mode only)."""
        self._require_explicit("unload")
        try:
            await self.state.control.unload(name)
        except ModelLoadError as exc:
            raise BadRequest(str(exc)) from None

    def _require_explicit(self, action: str) -> None:
        mode = self.state.settings.model_control_mode
        if mode != "explicit":
            raise BadRequest(
                f"explicit model {action} is not allowed in model control mode {mode!r} "
                "(start the server with --model-control-mode explicit)"
            )

    # ---- inference ----------------------------------------------------------------------------
    async def infer(
        self,
        model: LoadedModel,
        request: InferenceRequest,
        *,
        started: float,
        deadline: float | None,
        version: str | None = None,
    ) -> InferenceResponse:
        """Run one request on ``model``. ``started`` is its ``time.perf_counter()`` at arrival (for the
        request-duration metric), ``deadline`` a ``loop.time()`` after which it fails with 504 /
        DEADLINE_EXCEEDED (None: no deadline), ``version`` the version the client named (None: default)."""
        inputs = request.inputs
        image = model.image
        if image is not None and image.input in inputs and _encoded(model, image.input, inputs[image.input]):
            inputs = dict(inputs)
            inputs[image.input] = await self._decode_images(model, inputs[image.input])
        results = await self.run(model, inputs, request.outputs, started=started, deadline=deadline, version=version)
        return _response(model, request, results)

    def infer_now(self, model: LoadedModel, request: InferenceRequest, *, started: float) -> InferenceResponse | None:
        """``infer`` in one synchronous call, for a tiny model on an idle queue (runtime/batching.py: its run
        would be inline anyway); None, with nothing done or counted, for any other request, which then takes
        ``infer``. Three coroutines and their checks less per request: on a tiny model the number of distinct
        functions a request passes through costs more than their instructions (docs/runtime.md, "Per-request
        cost"). Nothing here suspends, so no reload can retire the version mid-way and ``inflight`` need not
        count it; a version already retired takes ``infer``, which moves it to the current one."""
        inputs = request.inputs
        batcher = model.batcher
        if model.image is not None or model.entry.retired or not batcher.inline_now(inputs):
            return None
        metrics = model.metrics
        outputs = request.outputs
        try:
            if outputs:
                check_outputs(model, outputs)
            results = batcher.run_now(model.engine.validate(inputs), outputs)
        except ModelportError:
            metrics.failure.inc()
            raise
        metrics.succeeded(started)
        return _response(model, request, results)

    async def run(
        self,
        model: LoadedModel,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str] | None,
        *,
        started: float,
        deadline: float | None,
        version: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Validate, queue, run; count success/failure and the request duration for ``/metrics``.

        A reload may have retired ``model``'s version since the request looked it up (while its body was
        read): the request then runs on the model's current version. ``inflight`` tells the reload when
        the old version is free to close (no await between choosing the entry and counting it)."""
        entry = model.entry
        if entry.retired:
            entry = self.state.repository.current(entry, version)
            model = entry.require_loaded()
        metrics = model.metrics
        entry.inflight += 1
        try:
            if outputs:
                check_outputs(model, outputs)
            checked = model.engine.validate(inputs)
            result = await model.batcher.infer(checked, outputs, deadline, alone=self._alone)
        except (ModelportError, asyncio.CancelledError):
            metrics.failure.inc()
            raise
        finally:
            entry.inflight -= 1
        metrics.succeeded(started)
        return result

    async def decode_image(self, model: LoadedModel, data: bytes) -> np.ndarray:
        """One encoded image -> the model's image tensor without the batch axis (in the decoding pool)."""
        if model.image is None:
            raise BadRequest(f"model {model.name!r} has no image input; use /api/models/{model.name}/predict")
        loop = asyncio.get_running_loop()
        max_pixels = self.state.settings.max_image_pixels
        if await self._lone_upload(len(data)):
            return await self._decode_opened(open_image(data, max_pixels), model.image)
        return await loop.run_in_executor(self.state.decode_executor, decode_image, data, model.image, max_pixels)

    async def _lone_upload(self, size: int) -> bool:
        """Whether an upload of ``size`` bytes may be opened on the loop: a lone request's small image."""
        return size <= LONE_DECODE_MAX_BYTES and await self._alone()

    async def _alone(self) -> bool:
        """Whether the asking request is the only one the server is handling (``ServerState.in_progress``).

        Requests whose bytes arrived together start one after another in one turn of the event loop, each
        counted when its handler starts. The first to start would count itself alone; run on the loop, it
        would finish before the next one even started, which would then count itself alone too, and so on:
        every request run serially on the loop, the cores idle. One yield first lets the requests already
        started count themselves (one loop turn, a few microseconds; the hand-off it may save costs hundreds)."""
        if self.state.in_progress > 1:
            return False
        await asyncio.sleep(0)
        return self.state.in_progress <= 1

    async def _decode_opened(self, image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
        """A lone request's opened image: decoded right here when it is small, else in the decoding pool."""
        if image.size[0] * image.size[1] <= LONE_DECODE_MAX_PIXELS:
            return decode_opened(image, spec)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.state.decode_executor, decode_opened, image, spec)

    async def _decode_images(self, model: LoadedModel, items: np.ndarray) -> np.ndarray:
        """A BYTES tensor of encoded images -> the batch tensor. The batch-size check comes before
        decoding: each image may cost up to --max-image-pixels of work."""
        assert model.image is not None
        limit = model.manifest.max_batch_size
        if limit > 0 and items.size > limit:
            raise BadRequest(
                f"model {model.name!r}: input {model.image.input!r} has batch size {items.size}, "
                f"more than the model's max_batch_size {limit}"
            )
        loop = asyncio.get_running_loop()  # Pillow work goes to the decoding pool, off the event loop
        settings = self.state.settings
        if items.size == 1 and await self._lone_upload(len(items.flat[0])):  # except a lone request's one small image
            opened = open_batch(items, model.image, settings.max_image_pixels, settings.max_request_pixels)
            return (await self._decode_opened(opened[0], model.image))[None, ...]
        return await loop.run_in_executor(
            self.state.decode_executor,
            decode_batch,
            items,
            model.image,
            settings.max_image_pixels,
            settings.max_request_pixels,
        )


def _response(model: LoadedModel, request: InferenceRequest, results: dict[str, np.ndarray]) -> InferenceResponse:
    """The outputs the request asked for, in its order (every output in manifest order when it named none)."""
    order = request.outputs or [o.name for o in model.manifest.outputs]
    return InferenceResponse(model.name, model.version, [(n, results[n]) for n in order], request.id)


def _encoded(model: LoadedModel, name: str, array: np.ndarray) -> bool:
    """A BYTES tensor sent to a numeric image input: encoded images to decode."""
    spec = model.manifest.input(name)
    return array.dtype == object and spec is not None and spec.datatype != "BYTES"


def check_outputs(model: LoadedModel, outputs: Sequence[str] | None) -> None:
    if not outputs:
        return
    manifest = model.manifest
    for name in outputs:
        if manifest.output(name) is None:
            known = ", ".join(o.name for o in manifest.outputs)
            raise BadRequest(f"model {model.name!r} has no output {name!r}; its outputs are: {known}")
