"""Open Inference Protocol (KServe V2) REST: model metadata, readiness and inference.

Inference accepts JSON tensors and Triton's binary tensor data extension in both directions.
An encoded image sent as a BYTES tensor to a model's image input is decoded by the image codec.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp import web

from bundle.manifest import ImagePreprocessing, Manifest
from runtime.codecs import v2_binary, v2_json
from runtime.codecs.image import decode_batch, image_preprocessing
from runtime.errors import BadRequest
from runtime.handlers.common import EXECUTOR, REPOSITORY, SETTINGS, infer, json_response, model_entry
from runtime.repository import ModelVersion
from runtime.validation import numpy_dtype, v2_datatype

PLATFORMS = {"onnx": "onnxruntime_onnx", "pmml": "pmml"}


def tensor_metadata(specs: list) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": s.datatype, "shape": s.shape} for s in specs]


async def model_metadata(request: web.Request) -> web.Response:
    entry = model_entry(request, request.match_info["name"], request.match_info.get("version"))
    manifest = entry.require_engine().manifest
    return json_response(metadata(request, entry, manifest))


def metadata(request: web.Request, entry: ModelVersion, manifest: Manifest) -> dict[str, Any]:
    versions = sorted(request.app[REPOSITORY].models.get(entry.name, {entry.version: entry}), key=int)
    return {
        "name": entry.name,
        "versions": versions,
        "platform": PLATFORMS.get(entry.format, entry.format),
        "inputs": tensor_metadata(manifest.inputs),
        "outputs": tensor_metadata(manifest.outputs),
    }


def _decode_inputs(
    entry: ModelVersion, payload: dict[str, Any], binary: memoryview, max_elements: int
) -> tuple[dict[str, np.ndarray], ImagePreprocessing | None]:
    """The request tensors, and the image preprocessing when the image input came as encoded BYTES
    (decoded by the caller, off the event loop)."""
    tensors = payload.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest('the request needs "inputs": a non-empty list of tensors')
    manifest = entry.require_engine().manifest
    image = image_preprocessing(manifest) if entry.format == "onnx" else None
    _check_structure(tensors)  # every 400 for a malformed request before any limit's 413
    inputs: dict[str, np.ndarray] = {}
    encoded_image = None
    offset = 0
    for tensor in tensors:
        name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
        count = v2_json.element_count(name, shape, max_elements)
        parameters = _parameters(tensor, f"input {name!r}: ")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size {size} runs past the end of the body")
            array = v2_binary.tensor_from_bytes(name, datatype, shape, count, binary[offset : offset + size])
            offset += size
        else:
            array = v2_json.tensor_from_json(name, datatype, shape, tensor.get("data"), max_elements)
        if image is not None and name == image.input and datatype == "BYTES":
            encoded_image = image
        inputs[name] = array
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes after the last binary tensor")
    return inputs, encoded_image


def _check_structure(tensors: list[Any]) -> None:
    """Each input is an object with a string name, a V2 datatype, a shape of non-negative integers,
    object parameters and list data; names are unique."""
    seen: set[str] = set()
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise BadRequest("each input must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        datatype = tensor.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise BadRequest("each input needs a string name and datatype")
        if name in seen:
            raise BadRequest(f"input {name!r} is given twice")
        seen.add(name)
        numpy_dtype(datatype)
        v2_json.check_shape(name, tensor.get("shape"))
        _parameters(tensor, f"input {name!r}: ")
        if "data" in tensor and not isinstance(tensor["data"], list):
            raise BadRequest(f'tensor {name!r}: "data" must be a list (flat or nested)')


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """``obj["parameters"]``: absent is empty; anything but an object (null included) is a 400."""
    if "parameters" not in obj:
        return {}
    parameters = obj["parameters"]
    if not isinstance(parameters, dict):
        raise BadRequest(f'{where}"parameters" must be an object')
    return parameters


def _requested_outputs(payload: dict[str, Any]) -> tuple[list[str] | None, dict[str, bool]]:
    """Output names (None: all) and, per name, whether the client asked for it in binary."""
    if "outputs" not in payload:
        return None, {}
    requested = payload["outputs"]
    if not isinstance(requested, list):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    names: list[str] = []
    binary: dict[str, bool] = {}
    for item in requested:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest('each entry of "outputs" needs a string "name"')
        params = _parameters(item, f"output {item['name']!r}: ")
        names.append(item["name"])
        if "binary_data" in params:
            binary[item["name"]] = bool(params["binary_data"])
    return names or None, binary


def _check_image_count(entry: ModelVersion, name: str, count: int) -> None:
    """The batch-size check, before decoding: each image may cost up to --max-image-pixels of work."""
    limit = entry.require_engine().manifest.max_batch_size
    if limit > 0 and count > limit:
        raise BadRequest(
            f"model {entry.name!r}: input {name!r} has batch size {count}, more than the model's max_batch_size {limit}"
        )


async def model_infer(request: web.Request) -> web.Response:
    entry = model_entry(request, request.match_info["name"], request.match_info.get("version"))
    settings = request.app[SETTINGS]
    body = await request.read()
    header, binary = v2_binary.split_body(body, request.headers.get(v2_binary.HEADER))
    payload = v2_json.loads(header, settings.max_json_depth)
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object (a V2 inference request)")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    parameters = _parameters(payload, "")
    names, binary_by_name = _requested_outputs(payload)
    inputs, image = _decode_inputs(entry, payload, binary, settings.max_elements)
    if image is not None:  # Pillow work goes to the thread pool, like inference
        _check_image_count(entry, image.input, inputs[image.input].size)
        loop = asyncio.get_running_loop()
        decoded = loop.run_in_executor(
            request.app[EXECUTOR],
            decode_batch,
            inputs[image.input],
            image,
            settings.max_image_pixels,
            settings.max_request_pixels,
        )
        inputs[image.input] = await decoded
    results = await infer(request, entry, inputs, names)
    binary_default = bool(parameters.get("binary_data_output", False))
    manifest = entry.require_engine().manifest
    order = names or [o.name for o in manifest.outputs]
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in order:
        array = results[name]
        datatype = v2_datatype(array.dtype)
        if binary_by_name.get(name, binary_default):
            raw = v2_binary.tensor_to_bytes(datatype, array)
            outputs.append(
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            )
            chunks.append(raw)
        else:
            outputs.append(v2_json.tensor_to_json(name, datatype, array))
    response: dict[str, Any] = {"model_name": entry.name, "model_version": entry.version, "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    head = v2_json.dumps(response)
    if not chunks:
        return web.Response(body=head, content_type="application/json")
    return web.Response(
        body=b"".join([head, *chunks]),
        content_type="application/octet-stream",
        headers={v2_binary.HEADER: str(len(head))},
    )
