"""V2 REST bodies <-> the data plane's ``InferenceRequest`` / ``InferenceResponse``.

A request body is a JSON inference request, optionally followed by raw tensors (Triton's binary
tensor data extension, ``v2_binary``); the response is JSON, or JSON plus raw outputs when the client
asked for binary outputs. Nothing here knows a model: the data plane checks the tensors against the
manifest, and decodes encoded images, after the one model lookup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from runtime.codecs import v2_binary, v2_json
from runtime.dataplane import InferenceRequest, InferenceResponse
from runtime.errors import BadRequest
from runtime.validation import FLOAT_DTYPES, numpy_dtype, v2_datatype


@dataclass
class RestRequest:
    """The decoded request and how the client wants its outputs encoded."""

    request: InferenceRequest
    binary_default: bool = False  # parameters.binary_data_output
    binary_by_name: dict[str, bool] = field(default_factory=dict)  # outputs[].parameters.binary_data


def decode_request(body: bytes, header_length: str | None, max_json_depth: int, max_elements: int) -> RestRequest:
    if header_length is None:
        plain = plain_request(body, max_json_depth, max_elements)
        if plain is not None:
            return plain
    return decode_general(body, header_length, max_json_depth, max_elements)


_PLAIN_KEYS = frozenset({"name", "datatype", "shape", "data"})


def plain_request(body: bytes, max_json_depth: int, max_elements: int) -> RestRequest | None:
    """The common request, decoded in one pass: a JSON body that holds ``inputs`` (and a string ``id``) and
    nothing else, each input exactly ``name``, ``datatype``, ``shape`` and ``data``, with a floating-point
    datatype and numbers for data. Returns what ``decode_general`` returns for the same body, or None for
    any other body, valid or not: ``decode_general`` then decodes it, or names what is wrong. On a tiny
    model the general path's checks, one function per rule, were the largest Python cost of a request
    (docs/runtime.md, "Per-request cost")."""
    if body.count(b"[") + body.count(b"{") > max_json_depth:  # ``v2_json.loads``'s bound, nothing deeper
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(payload) is not dict:
        return None
    tensors = payload.get("inputs")
    request_id = payload.get("id")
    if type(tensors) is not list or not tensors or len(payload) != (1 if request_id is None else 2):
        return None
    if request_id is not None and type(request_id) is not str:
        return None
    inputs: dict[str, np.ndarray] = {}
    for tensor in tensors:
        if type(tensor) is not dict or tensor.keys() != _PLAIN_KEYS:
            return None
        name, shape, data = tensor["name"], tensor["shape"], tensor["data"]
        dtype = FLOAT_DTYPES.get(tensor["datatype"])
        if (
            dtype is None
            or type(name) is not str
            or name in inputs
            or type(shape) is not list
            or type(data) is not list
        ):
            return None
        for d in shape:
            if type(d) is not int or d < 0:
                return None
        count = math.prod(shape)
        if count > max_elements:
            return None
        try:
            array = np.asarray(data)
        except (ValueError, TypeError):
            return None
        if array.dtype.kind not in "iuf" or array.size != count:
            return None
        inputs[name] = (array if array.dtype == dtype else array.astype(dtype)).reshape(shape)
    return RestRequest(InferenceRequest(inputs=inputs, outputs=None, id=request_id, parameters={}))


def decode_general(body: bytes, header_length: str | None, max_json_depth: int, max_elements: int) -> RestRequest:
    """Any request body, JSON or JSON plus binary tensors, each rule checked with a message naming what is wrong."""
    header, binary = v2_binary.split_body(body, header_length)
    payload = v2_json.loads(header, max_json_depth)
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object (a V2 inference request)")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    parameters = _parameters(payload, "")
    names, binary_by_name = _requested_outputs(payload)
    inputs = _decode_inputs(payload, binary, max_elements)
    request = InferenceRequest(inputs=inputs, outputs=names, id=request_id, parameters=parameters)
    return RestRequest(request, bool(parameters.get("binary_data_output", False)), binary_by_name)


def encode_response(response: InferenceResponse, rest: RestRequest) -> tuple[bytes, str, dict[str, str] | None]:
    """(body, content type, extra headers or None)."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in response.outputs:
        datatype = v2_datatype(array.dtype)
        if rest.binary_by_name.get(name, rest.binary_default):
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
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    body["outputs"] = outputs
    if response.id is not None:
        body["id"] = response.id
    head = v2_json.dumps(body)
    if not chunks:
        return head, "application/json", None
    return b"".join([head, *chunks]), "application/octet-stream", {v2_binary.HEADER: str(len(head))}


def _decode_inputs(payload: dict[str, Any], binary: memoryview, max_elements: int) -> dict[str, np.ndarray]:
    tensors = payload.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise BadRequest('the request needs "inputs": a non-empty list of tensors')
    plan = _check_structure(tensors)  # every 400 for a malformed request before any limit's 413
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for name, datatype, dtype, shape, parameters, tensor in plan:
        count = v2_json.element_count(name, shape, max_elements)
        size = parameters.get("binary_data_size") if parameters else None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size {size} runs past the end of the body")
            array = v2_binary.tensor_from_bytes(name, datatype, shape, count, binary[offset : offset + size])
            offset += size
        else:
            array = v2_json.tensor_from_json(name, datatype, dtype, shape, count, tensor.get("data"))
        inputs[name] = array
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes after the last binary tensor")
    return inputs


def _check_structure(tensors: list[Any]) -> list[tuple[str, str, np.dtype, list[int], dict[str, Any], dict]]:
    """Each input is an object with a string name, a V2 datatype, a shape of non-negative integers,
    object parameters and list data; names are unique. Returns, per input, what decoding needs
    (name, datatype, numpy dtype, shape, parameters, the tensor object), so nothing is checked twice."""
    seen: set[str] = set()
    plan = []
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
        dtype = numpy_dtype(datatype)
        shape = tensor.get("shape")
        v2_json.check_shape(name, shape)
        parameters = _parameters(tensor, f"input {name!r}: ")
        if "data" in tensor and not isinstance(tensor["data"], list):
            raise BadRequest(f'tensor {name!r}: "data" must be a list (flat or nested)')
        plan.append((name, datatype, dtype, shape, parameters, tensor))
    return plan


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
