"""The simple API's JSON shapes <-> named numpy arrays cast to the model's input datatypes.

Accepted request bodies:

* ``{"inputs": {"x": nested list, ...}}``: named tensors;
* a bare nested list (or ``{"inputs": nested list}``): the one input of a single-input model;
* records, ``[{"field": value, ...}, ...]`` or ``{"records": [...]}``, and columns + rows,
  ``{"columns": [...], "rows": [[...], ...]}``: tabular data, for models whose every input holds
  one value per row (shape ``[-1]`` or ``[-1, 1]``).

A tensor missing only the batch axis (one row) gets it added. Values are cast to the input's
datatype: numbers (or numeric strings) to numbers, integral numbers to integers, strings for BYTES.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bundle.datatypes import Datatype
from bundle.manifest import Manifest, TensorSpec
from runtime.errors import BadRequest, PayloadTooLarge
from runtime.validation import format_shape


def decode(payload: Any, manifest: Manifest, max_elements: int) -> tuple[dict[str, np.ndarray], bool]:
    """Named input arrays, and whether the request was tabular (then the answer carries records)."""
    if isinstance(payload, dict):
        if "records" in payload:
            return _records(payload["records"], manifest, max_elements), True
        if "columns" in payload or "rows" in payload:
            return _rows(payload.get("columns"), payload.get("rows"), manifest, max_elements), True
        if "inputs" not in payload:
            raise BadRequest('send {"inputs": {"name": nested list}}, a nested list, records, or columns + rows')
        named = payload["inputs"]
        if isinstance(named, dict):
            return _named(named, manifest, max_elements), False
        return _single(named, manifest, max_elements), False
    if isinstance(payload, list):
        if payload and all(isinstance(r, dict) for r in payload):
            return _records(payload, manifest, max_elements), True
        return _single(payload, manifest, max_elements), False
    raise BadRequest("the body must be a JSON object or list")


def _named(named: dict[str, Any], manifest: Manifest, max_elements: int) -> dict[str, np.ndarray]:
    arrays = {}
    for name, value in named.items():
        spec = manifest.input(name)
        if spec is None:
            known = ", ".join(s.name for s in manifest.inputs)
            raise BadRequest(f"model {manifest.name!r} has no input {name!r}; its inputs are: {known}")
        arrays[name] = cast(spec, value, max_elements)
    return arrays


def _single(value: Any, manifest: Manifest, max_elements: int) -> dict[str, np.ndarray]:
    if len(manifest.inputs) != 1:
        names = ", ".join(s.name for s in manifest.inputs)
        raise BadRequest(f'model {manifest.name!r} has several inputs ({names}): send {{"inputs": {{name: ...}}}}')
    spec = manifest.inputs[0]
    return {spec.name: cast(spec, value, max_elements)}


def cast(spec: TensorSpec, value: Any, max_elements: int) -> np.ndarray:
    """A nested list -> an array of the input's datatype, with the batch axis added for one row."""
    dtype = Datatype(spec.datatype).numpy
    if not isinstance(value, list):
        raise BadRequest(f"input {spec.name!r}: send a (nested) list of values, not a single {type(value).__name__}")
    try:
        array = np.asarray(value, dtype=object if spec.datatype == "BYTES" else None)
    except (ValueError, TypeError):
        raise BadRequest(f"input {spec.name!r}: the nested list is ragged (rows of different lengths)") from None
    if array.size > max_elements:
        raise PayloadTooLarge(f"input {spec.name!r} has {array.size} elements, over the limit {max_elements}")
    array = _to_dtype(spec, array, dtype)
    if array.ndim == len(spec.shape) - 1 and spec.shape and spec.shape[0] == -1:
        array = array[None, ...]
    return array


def _to_dtype(spec: TensorSpec, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    name = spec.name
    if spec.datatype == "BYTES":
        if array.dtype != object or any(isinstance(x, (list, dict)) for x in array.flat):
            raise BadRequest(f"input {name!r} is text (BYTES): send strings")
        flat = [x if isinstance(x, str) else _text(name, x) for x in array.ravel().tolist()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape)
    if array.dtype.kind in "OU":
        try:
            array = array.astype(np.float64)
        except (ValueError, TypeError):
            raise BadRequest(f"input {name!r} is {spec.datatype}: every value must be a number") from None
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"input {name!r} is {spec.datatype}: every value must be a number")
    if dtype.kind in "iu" and array.size:
        if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.floor(array))):
            raise BadRequest(f"input {name!r} is {spec.datatype}: values must be whole numbers")
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(f"input {name!r}: a value is out of the {spec.datatype} range")
    return array.astype(dtype)


def _text(name: str, value: Any) -> str:
    if value is None:
        raise BadRequest(f"input {name!r}: null is not a value")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scalar_specs(manifest: Manifest) -> list[TensorSpec]:
    for spec in manifest.inputs:
        if spec.shape not in ([-1], [-1, 1]):
            raise BadRequest(
                f"records/rows need inputs with one value per row; input {spec.name!r} has shape "
                f'{format_shape(spec.shape)}: send {{"inputs": {{...}}}} instead'
            )
    return manifest.inputs


def _records(records: Any, manifest: Manifest, max_elements: int) -> dict[str, np.ndarray]:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest("records must be a list of objects, one per row")
    specs = _scalar_specs(manifest)
    names = {s.name for s in specs}
    for i, record in enumerate(records):
        extra = record.keys() - names
        if extra:
            raise BadRequest(f"record {i}: unknown field {sorted(extra)[0]!r}; fields: {', '.join(sorted(names))}")
        missing = names - record.keys()
        if missing:
            raise BadRequest(f"record {i}: missing field {sorted(missing)[0]!r}")
    columns = {s.name: [r[s.name] for r in records] for s in specs}
    return _columns(columns, specs, len(records), max_elements)


def _rows(columns: Any, rows: Any, manifest: Manifest, max_elements: int) -> dict[str, np.ndarray]:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest('"columns" must be a list of input names')
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == len(columns) for r in rows):
        raise BadRequest(f'"rows" must be a list of lists of {len(columns)} values (one per column)')
    specs = _scalar_specs(manifest)
    names = [s.name for s in specs]
    if sorted(columns) != sorted(names):
        raise BadRequest(f"columns {columns} do not match the model's inputs {names}")
    index = {c: i for i, c in enumerate(columns)}
    data = {name: [row[index[name]] for row in rows] for name in names}
    return _columns(data, specs, len(rows), max_elements)


def _columns(columns: dict[str, list], specs: list[TensorSpec], rows: int, max_elements: int) -> dict[str, np.ndarray]:
    if rows == 0:
        raise BadRequest("no rows")
    if rows > max_elements:
        raise PayloadTooLarge(f"{rows} rows, over the element limit {max_elements}")
    arrays = {}
    for spec in specs:
        values = columns[spec.name]
        if any(v is None or isinstance(v, (list, dict)) for v in values):
            raise BadRequest(f"field {spec.name!r}: every row needs one value (no null, list or object)")
        array = _to_dtype(
            spec, np.asarray(values, dtype=object if spec.datatype == "BYTES" else None), Datatype(spec.datatype).numpy
        )
        arrays[spec.name] = array.reshape(rows, 1) if len(spec.shape) == 2 else array
    return arrays


def encode_outputs(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Named outputs for orjson: numeric arrays stay arrays (serialised natively), text becomes str."""
    return {name: _plain(array) for name, array in outputs.items()}


def _plain(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind in "SU":
        flat = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.ravel().tolist()]
        return np.asarray(flat, dtype=object).reshape(array.shape).tolist()
    return np.ascontiguousarray(array)  # orjson writes NaN/inf as null


def records(outputs: dict[str, np.ndarray], rows: int) -> list[dict[str, Any]]:
    """One object per row: ``{output: value}``; a [N] or [N, 1] output gives a scalar per row."""
    columns = {}
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            continue
        plain = _plain(array)
        values = plain.tolist() if isinstance(plain, np.ndarray) else plain
        if array.ndim == 2 and array.shape[1] == 1:
            values = [v[0] for v in values]
        columns[name] = values
    return [{name: values[i] for name, values in columns.items()} for i in range(rows)]
