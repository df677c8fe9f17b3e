"""JSON bodies and V2 JSON tensors (``{"name", "datatype", "shape", "data"}``) <-> numpy arrays.

Numeric data, flat or nested, goes through one ``np.asarray`` (C speed): its kind is checked against
the declared datatype (integers for INT*, true/false for BOOL, numbers for FP*), integer ranges are
checked with one min/max, then it is cast. Floats are parsed as doubles and rounded once to the
target type, which is what a client that serialised a float32 produces: values round-trip bit for
bit. Outputs are written with orjson's native numpy serialisation (no per-element Python).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from runtime.errors import BadRequest, PayloadTooLarge

_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))
EXACT_DEPTH_BYTES = 1 << 20
_STEPS = np.zeros(256, dtype=np.int8)
_STEPS[list(_OPEN)] = 1
_STEPS[list(_CLOSE)] = -1


def loads(body: bytes, max_depth: int) -> Any:
    """Parse a JSON body, refusing nesting deeper than ``max_depth`` with a 400."""
    if not body:
        raise BadRequest("the request body is empty; send JSON")
    if _bracket_depth(body, max_depth) > max_depth and (
        len(body) > EXACT_DEPTH_BYTES or _exact_depth(body) > max_depth
    ):
        raise BadRequest(f"JSON nesting is deeper than {max_depth} levels (--max-json-depth)")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def _bracket_depth(body: bytes, max_depth: int) -> int:
    """Upper bound of the nesting depth: brackets inside strings count too.

    Most bodies have fewer opening brackets than the limit, which ``bytes.count`` settles in C;
    the rest take one vectorised pass (a lookup table maps each byte to +1, -1 or 0)."""
    opening = body.count(b"[") + body.count(b"{")
    if opening <= max_depth:
        return opening
    steps = _STEPS[np.frombuffer(body, dtype=np.uint8)]
    nonzero = steps[steps != 0]
    return int(np.cumsum(nonzero, dtype=np.int64).max()) if nonzero.size else 0


def _exact_depth(body: bytes) -> int:
    """The real depth, skipping strings. A Python loop, so only run on bodies up to
    ``EXACT_DEPTH_BYTES`` whose bound says they may be too deep (brackets in strings are that rare)."""
    depth = best = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            best = max(best, depth)
        elif byte in _CLOSE:
            depth -= 1
    return best


def check_shape(name: str, shape: Any) -> None:
    if type(shape) is list:  # the common case, in one pass: a loop, cheaper than all() over a generator
        for d in shape:
            if type(d) is not int or d < 0:
                break
        else:
            return
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"tensor {name!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise BadRequest(f"tensor {name!r}: shape {shape} has a negative dimension")


def element_count(name: str, shape: list[int], max_elements: int) -> int:
    """The number of elements of a ``shape`` already checked by ``check_shape``; 413 past ``max_elements``."""
    count = math.prod(shape)
    if count > max_elements:
        raise PayloadTooLarge(
            f"tensor {name!r} has {count} elements, more than the limit {max_elements} (--max-elements)"
        )
    return count


_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_UINT64 = np.dtype(np.uint64)


def tensor_from_json(name: str, datatype: str, dtype: np.dtype, shape: list[int], count: int, data: Any) -> np.ndarray:
    """Decode one request tensor's ``data`` (flat or nested) into an array of ``shape``, which has ``count``
    elements (the caller checked the shape, the datatype's ``dtype`` and the element limit)."""
    if data is None:
        raise BadRequest(f'tensor {name!r}: no data (send "data", or binary_data_size with the binary extension)')
    if not isinstance(data, list):
        raise BadRequest(f'tensor {name!r}: "data" must be a list (flat or nested), not {type(data).__name__}')
    array = _strings(name, data) if datatype == "BYTES" else _numbers(name, datatype, dtype, data)
    if array.size != count:
        raise BadRequest(f"tensor {name!r}: shape {shape} needs {count} values, but data has {array.size}")
    return array.reshape(shape)


def _numbers(name: str, datatype: str, dtype: np.dtype, data: list[Any]) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise BadRequest(f"tensor {name!r}: data is not a rectangular (non-ragged) nested list") from None
    kind = array.dtype.kind
    if kind == "O" and dtype == _UINT64:  # above int64's range numpy falls back to objects
        try:
            array = np.asarray(data, dtype=np.uint64)
        except (ValueError, TypeError, OverflowError):
            raise BadRequest(f"tensor {name!r}: UINT64 data must be integers in 0..2**64-1") from None
        kind = "u"
    target = dtype.kind
    if kind not in _ACCEPTED_KINDS[target] and array.size:
        what = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}[target]
        raise BadRequest(f"tensor {name!r}: {datatype} data must be {what}, got {_describe(array)}")
    if kind != target or array.dtype != dtype:
        if target in "iu" and kind in "iu" and array.size:
            info = np.iinfo(dtype)
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                raise BadRequest(f"tensor {name!r}: value {low if low < info.min else high} is out of {datatype} range")
        array = array.astype(dtype)
    return array


def _describe(array: np.ndarray) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "U": "strings"}.get(
        array.dtype.kind, "mixed or null values"
    )


def _strings(name: str, data: Any) -> np.ndarray:
    flat: list[Any] = []
    _flatten(data, flat)  # depth is bounded by --max-json-depth, so recursion is safe
    for i, item in enumerate(flat):
        if not isinstance(item, str):
            raise BadRequest(f"tensor {name!r}: BYTES data must be strings; element {i} is {type(item).__name__}")
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _flatten(data: Any, out: list[Any]) -> None:
    if not isinstance(data, list):
        out.append(data)
        return
    if all(not isinstance(x, list) for x in data):
        out.extend(data)
        return
    for item in data:
        _flatten(item, out)


def tensor_to_json(name: str, datatype: str, array: np.ndarray) -> dict[str, Any]:
    """A V2 output tensor; ``data`` is the flat row-major array, serialised natively by orjson."""
    if datatype == "BYTES":
        data: Any = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.ravel().tolist()]
    else:
        data = np.ascontiguousarray(array).ravel()
        if data.dtype.byteorder not in ("=", "|"):
            data = data.astype(data.dtype.newbyteorder("="))
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
