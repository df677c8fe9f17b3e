"""The V2 tensor datatypes and every mapping of them: the one table both stages import.

Each row binds a KServe V2 datatype to its numpy dtype, its ONNX ``TensorProto`` element type, the
type string onnxruntime reports (``tensor(float)``), Triton's ``config.pbtxt`` name (``TYPE_FP32``)
and its gRPC ``InferTensorContents`` field. Adding a datatype is one row here; nothing else in the
house keeps its own copy.

numpy is the only import: the serving image and the converter both have it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Datatype(StrEnum):
    """KServe V2 tensor datatypes, in the spec's order. A ``StrEnum``: compares equal to its name."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def info(self) -> DatatypeInfo:
        return _INFO[self]

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype; BYTES tensors are object arrays holding ``bytes`` or ``str`` items."""
        return _INFO[self].numpy

    @property
    def is_float(self) -> bool:
        return _INFO[self].numpy.kind == "f"

    @property
    def is_integer(self) -> bool:
        return _INFO[self].numpy.kind in "iu"


@dataclass(frozen=True)
class DatatypeInfo:
    numpy: np.dtype
    onnx: int  # onnx.TensorProto.DataType
    ort: str  # onnxruntime's NodeArg.type
    triton: str  # config.pbtxt data_type
    grpc_contents: str  # the InferTensorContents field that carries it in the V2 gRPC protocol


_INFO: dict[Datatype, DatatypeInfo] = {
    Datatype.BOOL: DatatypeInfo(np.dtype(np.bool_), 9, "tensor(bool)", "TYPE_BOOL", "bool_contents"),
    Datatype.UINT8: DatatypeInfo(np.dtype(np.uint8), 2, "tensor(uint8)", "TYPE_UINT8", "uint_contents"),
    Datatype.UINT16: DatatypeInfo(np.dtype(np.uint16), 4, "tensor(uint16)", "TYPE_UINT16", "uint_contents"),
    Datatype.UINT32: DatatypeInfo(np.dtype(np.uint32), 12, "tensor(uint32)", "TYPE_UINT32", "uint_contents"),
    Datatype.UINT64: DatatypeInfo(np.dtype(np.uint64), 13, "tensor(uint64)", "TYPE_UINT64", "uint64_contents"),
    Datatype.INT8: DatatypeInfo(np.dtype(np.int8), 3, "tensor(int8)", "TYPE_INT8", "int_contents"),
    Datatype.INT16: DatatypeInfo(np.dtype(np.int16), 5, "tensor(int16)", "TYPE_INT16", "int_contents"),
    Datatype.INT32: DatatypeInfo(np.dtype(np.int32), 6, "tensor(int32)", "TYPE_INT32", "int_contents"),
    Datatype.INT64: DatatypeInfo(np.dtype(np.int64), 7, "tensor(int64)", "TYPE_INT64", "int64_contents"),
    Datatype.FP16: DatatypeInfo(np.dtype(np.float16), 10, "tensor(float16)", "TYPE_FP16", ""),
    Datatype.FP32: DatatypeInfo(np.dtype(np.float32), 1, "tensor(float)", "TYPE_FP32", "fp32_contents"),
    Datatype.FP64: DatatypeInfo(np.dtype(np.float64), 11, "tensor(double)", "TYPE_FP64", "fp64_contents"),
    Datatype.BYTES: DatatypeInfo(np.dtype(object), 8, "tensor(string)", "TYPE_STRING", "bytes_contents"),
}
assert set(_INFO) == set(Datatype), "every datatype needs a row"

NAMES: tuple[str, ...] = tuple(d.value for d in Datatype)
_BY_NUMPY = {info.numpy: dt for dt, info in _INFO.items()}
_BY_ONNX = {info.onnx: dt for dt, info in _INFO.items()}
_BY_ORT = {info.ort: dt for dt, info in _INFO.items()}


_BY_NAME: dict[str, Datatype] = {d.value: d for d in Datatype}


def parse(name: str) -> Datatype | None:
    """The datatype called ``name``, or None when it is not a V2 datatype.

    A dict lookup rather than ``Datatype(name)``: the enum's call costs microseconds, and the server
    parses every request tensor's datatype."""
    try:
        return _BY_NAME.get(name)
    except TypeError:  # unhashable: certainly not a datatype name
        return None


def from_numpy(dtype: np.dtype | type) -> Datatype | None:
    """The V2 datatype of a numpy dtype (numpy strings and objects count as BYTES), or None."""
    found = _BY_NUMPY.get(dtype) if isinstance(dtype, np.dtype) and dtype.isnative else None  # the common case
    if found is not None:
        return found
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return Datatype.BYTES
    return _BY_NUMPY.get(dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype)


def from_onnx(elem_type: int) -> Datatype | None:
    """The V2 datatype of an ``onnx.TensorProto`` element type, or None (complex, bfloat16, float8...)."""
    return _BY_ONNX.get(elem_type)


def from_ort(type_string: str) -> Datatype | None:
    """The V2 datatype of onnxruntime's ``tensor(float)``-style type string, or None."""
    return _BY_ORT.get(type_string)
