"""Triton's binary tensor data extension: raw little-endian tensors after the JSON header.

A request or response body is ``JSON header || tensor bytes ...`` and the header's length travels in
the ``Inference-Header-Content-Length`` HTTP header. Each binary tensor names its byte size in
``parameters.binary_data_size``; tensors follow in the order they appear in the header. BYTES
elements are each a 4-byte little-endian length followed by the bytes; BOOL is one byte per element.
"""

from __future__ import annotations

import struct

import numpy as np

from runtime.errors import BadRequest
from runtime.validation import numpy_dtype

HEADER = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary remainder of a request body."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise BadRequest(f"{HEADER} must be an integer, got {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise BadRequest(f"{HEADER} is {length}, but the body has only {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def tensor_from_bytes(name: str, datatype: str, shape: list[int], count: int, raw: memoryview) -> np.ndarray:
    if datatype == "BYTES":
        return _strings_from_bytes(name, count, raw).reshape(shape)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"tensor {name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _strings_from_bytes(name: str, count: int, raw: memoryview) -> np.ndarray:
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise BadRequest(f"tensor {name!r}: BYTES data ends inside a length prefix")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > end:
            raise BadRequest(f"tensor {name!r}: BYTES element {len(items)} runs past binary_data_size")
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    if len(items) != count:
        raise BadRequest(f"tensor {name!r}: the shape needs {count} BYTES elements, the data has {len(items)}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def tensor_to_bytes(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.ravel().tolist():
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
