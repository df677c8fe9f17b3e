"""V2 gRPC messages <-> the data plane's ``InferenceRequest`` / ``InferenceResponse``.

Inputs come either typed (``contents``: the repeated field ``bundle.datatypes`` names per datatype) or
raw (``raw_input_contents``: one little-endian buffer per input, BYTES elements length-prefixed, the
same layout as the REST binary extension, so ``v2_binary`` decodes both). Outputs go back the way
the request came: raw when it sent raw (tritonclient.grpc does), typed when it sent typed, and raw
whenever an output has no typed field (FP16), because a response is either all raw or all typed.

Every malformed input is a ``BadRequest`` naming the tensor, and every limit the REST side has
applies here too (elements per tensor; the message size is gRPC's own limit).

Both directions run once per call on the event loop, so the common case (fixed-size datatypes, raw
contents) takes a short path: the datatype's little-endian dtype from a table built once, one read-only
array over the received bytes per input, one ``tobytes`` per output and the answer's wire bytes written
by ``grpc_wire``, each message field read once (every read of a upb field builds a Python object).
Anything unusual (BYTES, an unknown datatype, a wrong byte length, a negative dimension, too many
elements) goes to the general code, which raises the shared messages.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from bundle import datatypes
from runtime.codecs import grpc_wire, v2_binary, v2_json
from runtime.dataplane import InferenceRequest, InferenceResponse
from runtime.errors import BadRequest
from runtime.proto import grpc_predict_v2_pb2 as pb
from runtime.validation import numpy_dtype, v2_datatype


def parameters(message_parameters: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as plain Python values."""
    out: dict[str, Any] = {}
    for key, value in message_parameters.items():
        which = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, which) if which else None
    return out


def set_parameter(target: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        target[key].bool_param = value
    elif isinstance(value, int):
        target[key].int64_param = value
    elif isinstance(value, float):
        target[key].double_param = value
    else:
        target[key].string_param = str(value)


def decode_request(message: pb.ModelInferRequest, max_elements: int) -> tuple[InferenceRequest, bool]:
    """The data plane's request, and whether the client sent raw contents (then it gets raw outputs)."""
    tensors = message.inputs
    if not tensors:
        raise BadRequest("the request needs inputs: a non-empty list of tensors")
    raw = message.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; send one per input, in order"
        )
    inputs: dict[str, np.ndarray] = {}
    # slices, not iteration: iterating a upb container ends in an IndexError built with sprintf
    for index, tensor in enumerate(tensors[:]):
        name, datatype, shape = tensor.name, tensor.datatype, tensor.shape[:]
        if not name:
            raise BadRequest(f"input {index} has no name")
        if name in inputs:
            raise BadRequest(f"input {name!r} is given twice")
        count = math.prod(shape)  # int64 dimensions: only the sign and the limit are left to check
        if count > max_elements or (shape and min(shape) < 0):  # raise the shared messages
            v2_json.check_shape(name, shape)
            v2_json.element_count(name, shape, max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(f"input {name!r}: send contents or raw_input_contents, not both")
            data = raw[index]
            dtype = _RAW.get(datatype)
            if dtype is not None and len(data) == count * dtype.itemsize:
                inputs[name] = np.ndarray(shape, dtype, data)  # a read-only view of the bytes
            else:  # BYTES, an unknown datatype or a wrong length: the general decoder (and its messages)
                numpy_dtype(datatype)
                inputs[name] = v2_binary.tensor_from_bytes(name, datatype, shape, count, memoryview(data))
        else:
            numpy_dtype(datatype)
            inputs[name] = _from_contents(name, datatype, shape, count, tensor.contents)
    outputs = [o.name for o in message.outputs[:]] or None
    if outputs is not None and len(set(outputs)) != len(outputs):
        raise BadRequest("an output is requested twice")
    request = InferenceRequest(
        inputs=inputs,
        outputs=outputs,
        id=message.id or None,
        parameters=parameters(message.parameters) if message.parameters else {},
    )
    return request, bool(raw)


# The fixed-size datatypes' little-endian dtypes (the wire order of raw contents); BYTES has none.
_RAW: dict[str, np.dtype] = {
    kind.value: kind.numpy.newbyteorder("<") for kind in datatypes.Datatype if kind is not datatypes.Datatype.BYTES
}


def _from_contents(name: str, datatype: str, shape: list[int], count: int, contents: Any) -> np.ndarray:
    field = datatypes.Datatype(datatype).info.grpc_contents
    if not field:
        raise BadRequest(f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise BadRequest(f"input {name!r}: shape {shape} needs {count} values, {field} has {len(values)}")
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    # The typed fields are wider than some datatypes (uint_contents carries UINT8/16/32 as uint32):
    # values out of the datatype's range are the client's error, never silently wrapped.
    wide = np.array(values, dtype=_WIDE[field])
    if dtype.kind in "iu" and wide.size and dtype.itemsize < wide.dtype.itemsize:
        info = np.iinfo(dtype)
        low, high = wide.min(), wide.max()
        if low < info.min or high > info.max:
            raise BadRequest(f"input {name!r}: value {low if low < info.min else high} is out of {datatype} range")
    return wide.astype(dtype, copy=False).reshape(shape)


_WIDE = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}


def encode_response(response: InferenceResponse, raw: bool) -> bytes:
    """The serialized ``ModelInferResponse``: raw contents (written by ``grpc_wire``) or typed ones."""
    kinds = [_KINDS.get(array.dtype) or _kind(array) for _, array in response.outputs]
    if raw or any(not kind.info.grpc_contents for kind in kinds):
        outputs = []
        for (name, array), kind in zip(response.outputs, kinds, strict=True):
            # tobytes is C order already; only a non-native byte order (or BYTES) needs the general encoder
            data = array.tobytes() if _LITTLE and array.dtype.isnative and kind is not _BYTES else None
            outputs.append((name, kind, array.shape, data or v2_binary.tensor_to_bytes(kind.value, array)))
        return grpc_wire.raw_response(response.model_name, response.model_version, response.id, outputs)
    message = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version)
    if response.id is not None:
        message.id = response.id
    tensors = message.outputs
    for (name, array), kind in zip(response.outputs, kinds, strict=True):
        tensor = tensors.add(name=name, datatype=kind.value, shape=array.shape)
        if kind is datatypes.Datatype.BYTES:
            tensor.contents.bytes_contents.extend(
                x if isinstance(x, bytes) else str(x).encode("utf-8") for x in array.ravel().tolist()
            )
        else:
            getattr(tensor.contents, kind.info.grpc_contents).extend(array.ravel().tolist())
    return message.SerializeToString()


_KINDS: dict[np.dtype, datatypes.Datatype] = {}  # output dtype -> datatype, filled as outputs are seen


def _kind(array: np.ndarray) -> datatypes.Datatype:
    kind = _KINDS.get(array.dtype)
    if kind is None:
        kind = datatypes.from_numpy(array.dtype)
        if kind is None:
            v2_datatype(array.dtype)  # raises naming the dtype
        _KINDS[array.dtype] = kind  # type: ignore[assignment]
    return kind  # type: ignore[return-value]


_LITTLE = sys.byteorder == "little"
_BYTES = datatypes.Datatype.BYTES
