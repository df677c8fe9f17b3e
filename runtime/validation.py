"""The generic check of decoded request tensors against ``manifest.inputs``.

Codecs turn the wire into numpy arrays of the datatype the request declared; this module decides
whether those arrays fit the model: known and complete input names, the exact datatype (a V2 request
that says FP64 for an FP32 input is refused rather than silently cast), the shape against the spec
(-1 matches any size) and the batch size against ``max_batch_size``. Everything is O(number of
inputs): no element is touched, so it runs on the event loop.
"""

from __future__ import annotations

import numpy as np

from bundle import datatypes
from bundle.manifest import Manifest, TensorSpec
from runtime.errors import BadRequest

_NUMPY = {d.value: d.numpy for d in datatypes.Datatype}
_V2_NAMES = {d.numpy: d.value for d in datatypes.Datatype if d.numpy.kind != "O"}  # native numeric dtype -> name
FLOAT_DTYPES = {d.value: d.numpy for d in datatypes.Datatype if d.is_float}  # "FP32" -> float32, ...


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a request's datatype; an unknown name is the client's error (400)."""
    try:
        return _NUMPY[datatype]
    except (KeyError, TypeError):
        raise BadRequest(f"unknown datatype {datatype!r}; V2 datatypes are {', '.join(datatypes.NAMES)}") from None


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 name of a numpy dtype; numpy strings count as BYTES. Every response tensor asks, so a native
    numeric dtype is one dict lookup (an enum member's ``.value`` is a Python-level descriptor call)."""
    name = _V2_NAMES.get(dtype) if dtype.isnative else None
    if name is not None:
        return name
    parsed = datatypes.from_numpy(dtype)
    if parsed is None:
        raise ValueError(f"numpy dtype {dtype} has no V2 datatype")
    return parsed.value


def shape_matches(shape: tuple[int, ...], spec: list[int]) -> bool:
    if len(shape) != len(spec):
        return False
    for got, want in zip(shape, spec, strict=True):  # noqa: SIM110 (a loop: cheaper than all() over a generator)
        if want != got and want != -1:
            return False
    return True


def format_shape(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class InputCheck:
    """``check_inputs`` for one manifest, with the per-input lookups done once at load.

    Engines build one when they load and call it for every request: the names, numpy dtypes and shapes
    it compares against are then plain attributes, not searches of the manifest (py-spy on the benchmark
    MLP: the searches and datatype lookups were several microseconds of every request)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._names = frozenset(s.name for s in manifest.inputs)
        self._plan = [(s, datatypes.Datatype(s.datatype).numpy) for s in manifest.inputs]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if inputs.keys() != self._names:
            _refuse_names(self.manifest, inputs)
        manifest = self.manifest
        limit = manifest.max_batch_size
        checked: dict[str, np.ndarray] = {}
        batch: int | None = None
        for spec, want in self._plan:
            array = inputs[spec.name]
            if array.dtype != want or spec.datatype == "BYTES" or not shape_matches(array.shape, spec.shape):
                array = _check_tensor(manifest.name, spec, array)  # the slow path names the problem
            if limit > 0:
                rows = array.shape[0] if array.ndim else 0
                if rows > limit or (batch is not None and rows != batch):
                    _refuse_batch(manifest, spec, rows, batch)
                batch = rows
            checked[spec.name] = array
        return checked


def _refuse_names(manifest: Manifest, inputs: dict[str, np.ndarray]) -> None:
    known = [s.name for s in manifest.inputs]
    for name in inputs:
        if manifest.input(name) is None:
            raise BadRequest(f"model {manifest.name!r} has no input {name!r}; its inputs are: {', '.join(known)}")
    missing = [n for n in known if n not in inputs]
    raise BadRequest(f"model {manifest.name!r}: missing input {missing[0]!r}; it needs: {', '.join(known)}")


def _refuse_batch(manifest: Manifest, spec: TensorSpec, rows: int, batch: int | None) -> None:
    if rows > manifest.max_batch_size:
        raise BadRequest(
            f"model {manifest.name!r}: input {spec.name!r} has batch size {rows}, "
            f"more than the model's max_batch_size {manifest.max_batch_size}"
        )
    raise BadRequest(f"model {manifest.name!r}: inputs disagree on the batch size ({batch} vs {rows} in {spec.name!r})")


def check_inputs(manifest: Manifest, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return ``inputs`` (numpy string arrays made object arrays) or raise ``BadRequest`` naming the input."""
    specs = manifest.inputs
    known = [s.name for s in specs]
    for name in inputs:
        if manifest.input(name) is None:
            raise BadRequest(f"model {manifest.name!r} has no input {name!r}; its inputs are: {', '.join(known)}")
    missing = [n for n in known if n not in inputs]
    if missing:
        raise BadRequest(f"model {manifest.name!r}: missing input {missing[0]!r}; it needs: {', '.join(known)}")
    checked: dict[str, np.ndarray] = {}
    batch: int | None = None
    for spec in specs:
        array = _check_tensor(manifest.name, spec, inputs[spec.name])
        if manifest.max_batch_size > 0:
            rows = array.shape[0] if array.ndim else 0
            if rows > manifest.max_batch_size:
                raise BadRequest(
                    f"model {manifest.name!r}: input {spec.name!r} has batch size {rows}, "
                    f"more than the model's max_batch_size {manifest.max_batch_size}"
                )
            if batch is not None and rows != batch:
                raise BadRequest(
                    f"model {manifest.name!r}: inputs disagree on the batch size ({batch} vs {rows} in {spec.name!r})"
                )
            batch = rows
        checked[spec.name] = array
    return checked


def _check_tensor(model: str, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    want = datatypes.Datatype(spec.datatype).numpy
    if spec.datatype == "BYTES":
        if array.dtype.kind in "SU":
            array = array.astype(object)
        elif array.dtype != want:
            raise BadRequest(
                f"model {model!r}: input {spec.name!r} is BYTES, the request sent {v2_datatype(array.dtype)}"
            )
    elif array.dtype != want:
        got = v2_datatype(array.dtype) if array.dtype.kind in "biufOSU" else str(array.dtype)
        raise BadRequest(f"model {model!r}: input {spec.name!r} is {spec.datatype}, the request sent {got}")
    if not shape_matches(array.shape, spec.shape):
        raise BadRequest(
            f"model {model!r}: input {spec.name!r} has shape {format_shape(array.shape)}, "
            f"the model expects {format_shape(spec.shape)} (-1: any size)"
        )
    return array
