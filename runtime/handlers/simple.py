"""The simple API, for people with curl: nested-list JSON predictions, image uploads, model info.

``/predict`` and ``/predict/image`` go to the only model served (or ``?model=NAME``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from bundle.manifest import ImagePreprocessing, Manifest, TensorSpec
from runtime.codecs import simple_json, v2_json
from runtime.codecs.image import image_preprocessing
from runtime.dataplane import DataPlane
from runtime.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from runtime.handlers.common import DEADLINE, MODEL, STARTED, dataplane, json_response, model, read_body, settings
from runtime.repository import PLATFORMS, LoadedModel, ModelVersion

DEFAULT_TOP_K = 5


def _model_name(request: web.Request) -> str:
    """``{name}``, else ``?model=``, else the only model served."""
    name = request.match_info.get("name") or request.query.get("model")
    if not name:
        models = [entry.name for entry in dataplane(request).models()]
        if len(models) != 1:
            raise BadRequest(f"several models are served ({', '.join(models)}): add ?model=NAME")
        name = models[0]
    return name


# ---- listing and info ---------------------------------------------------------------------------
async def list_models(request: web.Request) -> web.Response:
    plane = dataplane(request)
    models = [
        {
            "name": entry.name,
            "version": entry.version,
            "versions": plane.versions(entry.name),
            "ready": entry.ready,
            "format": entry.format,
        }
        for entry in plane.models()
    ]
    return json_response({"models": models})


async def model_info(request: web.Request) -> web.Response:
    request[MODEL] = request.match_info["name"]
    plane = dataplane(request)
    return json_response(describe(plane, plane.entry(request.match_info["name"])))


def describe(plane: DataPlane, entry: ModelVersion) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": entry.name,
        "version": entry.version,
        "versions": plane.versions(entry.name),
        "format": entry.format,
        "platform": PLATFORMS.get(entry.format, entry.format),
        "ready": entry.ready,
    }
    manifest = entry.manifest
    if entry.error:
        info["error"] = entry.error
    if manifest is None:
        return info
    image = entry.loaded.image if entry.loaded is not None else _manifest_image(entry.format, manifest)
    info["description"] = _sentence(entry.name, manifest, image is not None)
    info["inputs"] = [_tensor(s) for s in manifest.inputs]
    info["outputs"] = [_tensor(s) for s in manifest.outputs]
    info["max_batch_size"] = manifest.max_batch_size
    base = f"/api/models/{entry.name}"
    info["endpoints"] = {"predict": f"{base}/predict", "v2_infer": f"/v2/models/{entry.name}/infer"}
    if image is not None:
        info["endpoints"]["image"] = f"{base}/image"
        info["image"] = {
            "input": image.input,
            "layout": image.layout,
            "height": image.height,
            "width": image.width,
            "color_mode": image.color_mode,
            "datatype": image.datatype,
            "scale": image.scale,
            "mean": image.mean,
            "std": image.std,
            "how": "pixel values 0..255 -> (pixel * scale - mean) / std per channel, bilinear resize",
            "derived": manifest.image is None,
        }
    if manifest.labels:
        info["labels"] = manifest.labels
    if manifest.source is not None:
        info["source"] = {"format": manifest.source.format, "converters": manifest.source.converters}
        if manifest.source.opset is not None:
            info["source"]["opset"] = manifest.source.opset
    if manifest.parity is not None:
        p = manifest.parity
        parity = {"verified": p.verified, "samples": p.samples, "max_abs_error": p.max_abs_error}
        parity |= {"max_rel_error": p.max_rel_error, "atol": p.atol, "rtol": p.rtol}
        if p.label_agreement is not None:
            parity["label_agreement"] = p.label_agreement
        info["parity"] = {k: v for k, v in parity.items() if v is not None}
    return info


def _manifest_image(fmt: str, manifest: Manifest) -> ImagePreprocessing | None:
    """A model not loaded (yet): the image preprocessing its manifest alone implies."""
    return image_preprocessing(manifest) if fmt == "onnx" else None


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}
    if spec.allowed_values:
        out["allowed_values"] = spec.allowed_values
    return out


def _words(spec: TensorSpec) -> str:
    batched = bool(spec.shape) and spec.shape[0] == -1
    per_row = spec.shape[1:] if batched else spec.shape
    if per_row in ([], [1]):
        one = {"BYTES": "a string", "BOOL": "a true/false value"}.get(spec.datatype, f"a number ({spec.datatype})")
        return f"{spec.name!r} ({one}{' per row' if batched else ''})"
    kind = {"BYTES": "strings", "BOOL": "true/false values"}.get(spec.datatype, f"{spec.datatype} numbers")
    size = "x".join("any" if d < 0 else str(d) for d in per_row)
    return f"{spec.name!r} ({size} {kind}{' per row' if batched else ''})"


def _sentence(name: str, manifest: Manifest, has_image: bool) -> str:
    outputs = " and ".join(_words(s) for s in manifest.outputs)
    if has_image:
        classes = f" the top-{DEFAULT_TOP_K} of {len(manifest.labels)} labelled classes and" if manifest.labels else ""
        return (
            f"Upload an image to /api/models/{name}/image (multipart field 'image' or a raw image body); "
            f"you get back{classes} {outputs}."
        )
    inputs = " and ".join(_words(s) for s in manifest.inputs)
    tabular = all(s.shape in ([-1], [-1, 1]) for s in manifest.inputs)
    how = 'records [{"field": value, ...}] or {"inputs": {...}}' if tabular else '{"inputs": {...}}'
    return f"POST {how} to /api/models/{name}/predict with {inputs}; you get back {outputs}."


# ---- predict ------------------------------------------------------------------------------------
async def predict(request: web.Request) -> web.Response:
    found = model(request, _model_name(request))
    limits = settings(request)
    payload = v2_json.loads(await read_body(request), limits.max_json_depth)
    inputs, tabular = simple_json.decode(payload, found.manifest, limits.max_elements)
    outputs = await _run(request, found, inputs)
    body: dict[str, Any] = {
        "model_name": found.name,
        "model_version": found.version,
        "outputs": simple_json.encode_outputs(outputs),
    }
    if tabular:
        rows = next(iter(inputs.values())).shape[0]
        body["records"] = simple_json.records(outputs, rows)
    return json_response(body)


# ---- image --------------------------------------------------------------------------------------
async def image(request: web.Request) -> web.Response:
    found = model(request, _model_name(request))
    spec = found.image
    if spec is None:
        raise BadRequest(f"model {found.name!r} has no image input; use /api/models/{found.name}/predict")
    others = [s.name for s in found.manifest.inputs if s.name != spec.input]
    if others:
        raise BadRequest(f"model {found.name!r} also needs inputs {', '.join(others)}: use the JSON predict endpoint")
    top_k = _top_k(request)
    data = await _upload(request, settings(request).max_body_bytes)
    pixels = await dataplane(request).decode_image(found, data)
    outputs = await _run(request, found, {spec.input: pixels[None, ...]})
    body: dict[str, Any] = {"model_name": found.name, "model_version": found.version}
    scores = _classifier_output(found.manifest, outputs)
    if scores is not None:
        body["predictions"] = _top(scores[0], found.manifest.labels, top_k)
    body["outputs"] = simple_json.encode_outputs(outputs)
    return json_response(body)


async def _run(request: web.Request, found: LoadedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return await dataplane(request).run(found, inputs, None, started=request[STARTED], deadline=request[DEADLINE])


def _top_k(request: web.Request) -> int:
    raw = request.query.get("top_k", str(DEFAULT_TOP_K))
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"top_k must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise BadRequest(f"top_k must be a positive integer, got {value}")
    return value


async def _upload(request: web.Request, limit: int) -> bytes:
    """The encoded image: a multipart field ``image`` (else the first file field) or a raw image body."""
    content_type = request.content_type
    if content_type.startswith("multipart/"):
        try:
            fallback = await _multipart_image(request, limit)
        except ValueError as exc:  # aiohttp's multipart parser: missing boundary, no starting boundary
            raise BadRequest(f"malformed multipart body: {exc}") from None
        if fallback is None:
            raise BadRequest("the multipart form has no field 'image' and no file field")
        return fallback
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        data = await read_body(request)
        if not data:
            raise BadRequest("the request body is empty; send the image bytes")
        return data
    raise UnsupportedMediaType(
        f"send the image as multipart/form-data (field 'image') or a raw image/* body, not {content_type!r}"
    )


async def _multipart_image(request: web.Request, limit: int) -> bytes | None:
    """The field ``image``, else the first file field, else None."""
    reader = await request.multipart()
    fallback: bytes | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "image" or (fallback is None and part.filename):
            data = await _read_part(part, limit)
            if part.name == "image":
                return data
            fallback = data
    return fallback


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    chunks = []
    size = 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the uploaded file is larger than the {limit // (1 << 20)} MiB limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _classifier_output(manifest: Manifest, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The [N, C] score output (C > 1): the manifest's label output, else the only such output."""
    if manifest.label_output and manifest.label_output in outputs:
        array = outputs[manifest.label_output]
        return array.reshape(array.shape[0], -1) if array.ndim >= 2 else None
    candidates = [a for a in outputs.values() if a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f"]
    return candidates[0] if len(candidates) == 1 else None


def _top(scores: np.ndarray, labels: list[str] | None, k: int) -> list[dict[str, Any]]:
    k = min(k, scores.shape[0])
    order = np.argsort(-scores.astype(np.float64), kind="stable")[:k]
    result = []
    for index in order.tolist():
        item: dict[str, Any] = {"index": index}
        if labels and index < len(labels):
            item["label"] = labels[index]
        item["score"] = float(scores[index])
        result.append(item)
    return result
