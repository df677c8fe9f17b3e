"""The protobuf wire bytes of a raw ``ModelInferResponse``, written directly.

``ModelInfer`` answers every raw request (what tritonclient.grpc sends) with the same small shape of
message: ``model_name``, ``model_version``, ``id``, one ``InferOutputTensor`` (name, datatype, shape)
per output and one ``raw_output_contents`` entry per output. Building it through upb costs a Python
wrapper object per field and per repeated element; writing the bytes costs a few concatenations, and the
output tensor descriptions, which repeat from call to call, come from a small cache.

The bytes are exactly what protobuf's own serializer writes for that message (fields in number order,
proto3 defaults omitted, ``shape`` packed): ``tests/runtime/test_grpc_wire.py`` compares them with it.
No ``runtime.proto`` import here, so that test can run next to tritonclient's copy of the messages.
"""

from __future__ import annotations

from collections.abc import Sequence

# Field keys: (field number << 3) | wire type 2 (length-delimited).
_MODEL_NAME, _MODEL_VERSION, _ID, _OUTPUTS, _RAW = b"\x0a", b"\x12", b"\x1a", b"\x2a", b"\x32"
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE = b"\x0a", b"\x12", b"\x1a"
_SMALL = [bytes((n,)) for n in range(0x80)]
_CACHE_LIMIT = 1024  # distinct (name, datatype, shape) outputs kept; cleared when full


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf base-128 varint."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(key: bytes, text: str) -> bytes:
    """A string field; empty is the proto3 default and is not written."""
    if not text:
        return b""
    data = text.encode("utf-8")
    return key + varint(len(data)) + data


def output_tensor(name: str, datatype: str, shape: Sequence[int]) -> bytes:
    """One ``outputs`` entry (field 5) of the response: its key, its length and the tensor message."""
    packed = b"".join(varint(d) for d in shape)  # output dimensions are never negative
    body = _string(_TENSOR_NAME, name) + _string(_TENSOR_DATATYPE, datatype)
    if packed:
        body += _TENSOR_SHAPE + varint(len(packed)) + packed
    return _OUTPUTS + varint(len(body)) + body


_outputs: dict[tuple[str, str, tuple[int, ...]], bytes] = {}
_heads: dict[tuple[str, str], bytes] = {}


def raw_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, str, tuple[int, ...], bytes]],
) -> bytes:
    """A serialized ``ModelInferResponse`` with ``raw_output_contents``; ``outputs`` are
    ``(name, datatype, shape, raw bytes)`` in response order."""
    head = _heads.get((model_name, model_version))
    if head is None:
        if len(_heads) >= _CACHE_LIMIT:
            _heads.clear()
        head = _heads[(model_name, model_version)] = _string(_MODEL_NAME, model_name) + _string(
            _MODEL_VERSION, model_version
        )
    parts = [head]
    if request_id:
        parts.append(_string(_ID, request_id))
    for name, datatype, shape, _ in outputs:
        key = (name, datatype, shape)
        tensor = _outputs.get(key)
        if tensor is None:
            if len(_outputs) >= _CACHE_LIMIT:
                _outputs.clear()
            tensor = _outputs[key] = output_tensor(name, datatype, shape)
        parts.append(tensor)
    for *_, data in outputs:
        parts.append(_RAW + varint(len(data)))
        parts.append(data)
    return b"".join(parts)
