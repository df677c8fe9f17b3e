"""What the TensorFlow-family converters (Keras, SavedModel, GraphDef, checkpoint) share.

Every path ends in tf2onnx 1.17, either from a ``tf.function`` (Keras, SavedModel) or from a frozen
GraphDef (GraphDef, checkpoint). tf2onnx names tensors after TensorFlow's (``x:0``,
``serving_default_a:0``) and leaves unknown dimensions as ``unk__N``; the served model should speak
the model's own names instead, so the written graph is renamed afterwards and the TensorFlow name
is kept in ``TensorSpec.source_name``. The batch axis is always dynamic (``batch``): the runtime
batches requests along it.

TensorFlow is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bundle.manifest import TensorSpec
from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.toolkit import (
    DEFAULT_INTEGER_BOUND,
    captured,
    datatype_for,
    first_line,
    name_dynamic_dims,
    order_outputs,
    rename_io,
    tensor_spec,
    versions,
)
from convert.toolkit import sample_inputs as toolkit_samples


@dataclass(frozen=True)
class TfInput:
    """One model input: its served name, numpy dtype name, shape (``None`` for unknown; the first
    axis is the batch) and the TensorFlow name it had, when that differs."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    source_name: str | None = None


@dataclass
class TfModelInfo:
    """Everything ``finish`` needs besides the ONNX graph: how to run the source model and what to record."""

    source: Path
    source_format: str
    inputs: list[TfInput]
    outputs: list[str]  # served output names, in the model's order
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    output_source_names: dict[str, str] = field(default_factory=dict)
    converters: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    integer_bound: int = DEFAULT_INTEGER_BOUND


# ---- TensorFlow import and logging --------------------------------------------------------------
def import_tensorflow() -> Any:
    """tensorflow, with its C++ and Python logging turned down to errors (the user sees our messages)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """tf2onnx and Keras print progress and deprecation chatter; keep it for error messages only.
    tf2onnx logs unsupported ops at ERROR; our own message names them, once."""
    loggers = dict.fromkeys(("tf2onnx", "tensorflow", "absl"), logging.CRITICAL)
    with captured(loggers) as log:
        yield log.output


def base_versions() -> dict[str, str]:
    return versions("tensorflow", "tf2onnx", "onnx")


# ---- datatypes and shapes -------------------------------------------------------------------------
def numpy_dtype_name(dtype: Any) -> str:
    """A numpy dtype name from a tf.DType, numpy dtype or string ("float32")."""
    as_numpy = getattr(dtype, "as_numpy_dtype", None)
    if as_numpy is not None:
        return np.dtype(as_numpy).name
    return np.dtype(str(dtype)).name


def v2_datatype(dtype: Any, what: str, source: Path) -> str:
    return datatype_for(numpy_dtype_name(dtype), what, source)


def tensor_base_name(tensor_name: str) -> str:
    """``dense/Softmax:0`` -> ``dense/Softmax``; ``split:1`` -> ``split_1``."""
    op, _, index = tensor_name.partition(":")
    return op if index in ("", "0") else f"{op}_{index}"


def unique_names(names: Sequence[str]) -> list[str]:
    """Names made unique by suffixing repeats (``dense``, ``dense_1``): two outputs from one layer."""
    seen: set[str] = set()
    result = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            candidate, n = f"{name}_{n}", n + 1
        seen.add(candidate)
        result.append(candidate)
    return result


def natural_key(text: str) -> list[Any]:
    """``output_2`` sorts before ``output_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def with_input_shapes(inputs: list[TfInput], options: ConvertOptions, source: Path) -> list[TfInput]:
    """``--input-shape NAME=d0,d1,...`` fills (or replaces) an input's non-batch dimensions; the
    batch axis stays dynamic whatever d0 says. Unknown names are an error, not silently ignored."""
    by_name = {i.name: i for i in inputs}
    aliases = {i.source_name: i.name for i in inputs if i.source_name} | {
        tensor_base_name(i.source_name): i.name for i in inputs if i.source_name
    }
    updated = dict(by_name)
    for given, dims in options.input_shapes.items():
        name = given if given in by_name else aliases.get(given)
        if name is None:
            raise ConversionError(
                f"{source}: --input-shape names {given!r}, which is not an input of the model "
                f"(inputs: {', '.join(by_name)})"
            )
        dims = [int(d) for d in dims]
        if not dims or any(d < 1 for d in dims[1:]):
            raise ConversionError(
                f"{source}: --input-shape {given}={','.join(map(str, dims))}: give every dimension, "
                f"positive (d0, the batch axis, is served as dynamic whatever its value)"
            )
        current = by_name[name].shape
        if current and len(current) != len(dims):
            raise ConversionError(
                f"{source}: --input-shape {given} has {len(dims)} dimensions but the model's input "
                f"{name} has rank {len(current)} ({format_shape(current)})"
            )
        updated[name] = replace(by_name[name], shape=(None, *dims[1:]))
    return [updated[i.name] for i in inputs]


def format_shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None or d < 0 else str(d) for d in shape) + "]"


def require_known_shapes(inputs: Sequence[TfInput], source: Path) -> None:
    """Verification needs concrete sample inputs; an unknown rank cannot even be converted."""
    for i in inputs:
        if any(d is None for d in i.shape[1:]):
            raise ConversionError(
                f"{source}: input {i.name} has unknown dimensions {format_shape(i.shape)}; give them with "
                f"--input-shape {i.name}=1,{','.join('D' if d is None else str(d) for d in i.shape[1:])}"
            )


def sample_inputs(inputs: Sequence[TfInput], seed: int, batch: int, integer_bound: int) -> dict[str, np.ndarray]:
    """Seeded inputs with ``batch`` rows (``convert.toolkit.sample_inputs``)."""
    return toolkit_samples([(i.name, i.dtype, (None, *i.shape[1:])) for i in inputs], seed, batch, integer_bound)


# ---- conversion -----------------------------------------------------------------------------------
def convert_callable(
    call: Callable[[list[Any]], dict[str, Any]], info: TfModelInfo, options: ConvertOptions, workdir: Path
) -> Converted:
    """Convert ``call`` (positional tf tensors in ``info.inputs`` order -> {served output name: tensor})
    through a tf.function whose inputs have a None batch axis.

    The tf.function uses neutral placeholder names (``mp_in_0``...) and output keys (``mp_out_0``...):
    TensorFlow restricts op names, and model names (signature keys, layer names) need not obey."""
    tf = import_tensorflow()
    import tf2onnx

    info.inputs = with_input_shapes(info.inputs, options, info.source)
    require_known_shapes(info.inputs, info.source)
    signature = [
        tf.TensorSpec(shape=(None, *i.shape[1:]), dtype=tf.as_dtype(i.dtype), name=f"mp_in_{n}")
        for n, i in enumerate(info.inputs)
    ]
    keys = {name: f"mp_out_{n}" for n, name in enumerate(info.outputs)}

    def traced(*args: Any) -> dict[str, Any]:
        result = call(list(args))
        return {keys[name]: tf.identity(result[name]) for name in info.outputs}

    function = tf.function(traced, input_signature=signature)
    with quiet() as log:
        try:
            model_proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=options.opset)
        except Exception as exc:
            raise ConversionError(
                f"{info.source}: tf2onnx could not convert the model: {first_line(exc)}{log_tail(log)}"
            ) from exc
    renames = {f"mp_in_{n}": i.name for n, i in enumerate(info.inputs)} | {v: k for k, v in keys.items()}
    return finish(model_proto, renames, info, options, workdir)


def convert_graph_def(
    graph_def: Any,
    input_tensors: Sequence[str],
    output_tensors: Sequence[str],
    info: TfModelInfo,
    options: ConvertOptions,
    workdir: Path,
) -> Converted:
    """Convert a frozen GraphDef; ``input_tensors``/``output_tensors`` are TensorFlow tensor names in
    the order of ``info.inputs``/``info.outputs``."""
    import_tensorflow()
    import tf2onnx

    with quiet() as log:
        try:
            model_proto, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                input_names=list(input_tensors),
                output_names=list(output_tensors),
                opset=options.opset,
            )
        except Exception as exc:
            raise ConversionError(
                f"{info.source}: tf2onnx could not convert the graph: {first_line(exc)}{log_tail(log)}"
            ) from exc
    renames = dict(zip(input_tensors, (i.name for i in info.inputs), strict=True)) | dict(
        zip(output_tensors, info.outputs, strict=True)
    )
    return finish(model_proto, renames, info, options, workdir)


def log_tail(log: io.StringIO) -> str:
    lines = [line for line in log.getvalue().splitlines() if "ERROR" in line or "Error" in line]
    return f" ({lines[-1].strip()[:300]})" if lines else ""


def finish(
    model_proto: Any, renames: dict[str, str], info: TfModelInfo, options: ConvertOptions, workdir: Path
) -> Converted:
    """Rename, order and check the graph, write ``workdir/model.onnx`` atomically, describe it."""
    import onnx

    rename_io(model_proto, renames, info.source)
    order_outputs(model_proto, info.outputs, info.source)
    name_dynamic_dims(model_proto)
    check_graph(model_proto, info.source)

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    tmp = workdir / ".model.onnx.tmp"
    onnx.save_model(model_proto, str(tmp))
    os.replace(tmp, path)

    source_names = {i.name: i.source_name for i in info.inputs} | info.output_source_names
    inputs = [io_spec(v, source_names.get(v.name), info.source) for v in model_proto.graph.input]
    outputs = [io_spec(v, source_names.get(v.name), info.source) for v in model_proto.graph.output]
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), options.opset)
    notes = list(info.notes)
    if opset != options.opset:
        notes.append(f"opset {opset} written ({options.opset} requested)")
    model_inputs, bound = list(info.inputs), info.integer_bound
    return Converted(
        model_path=path,
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        source_format=info.source_format,
        converters=info.converters or base_versions(),
        opset=opset,
        max_batch_size=-1,
        detail=dict(info.detail),
        notes=notes,
        reference=info.reference,
        make_inputs=lambda seed, batch: sample_inputs(model_inputs, seed, batch, bound),
    )


def check_graph(model_proto: Any, source: Path) -> None:
    """tf2onnx converts with ``continue_on_error``: an unsupported op stays in the graph as a TF op.
    Name them now rather than let onnxruntime fail later with a less helpful message."""
    import onnx

    unsupported = sorted(
        {n.op_type for n in model_proto.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)}
    )
    if unsupported:
        ops = unsupported
        raise ConversionError(
            f"{source}: tf2onnx cannot convert the TensorFlow ops {', '.join(ops)} to ONNX "
            f"(tried opset {max_inclusive_version(model_proto)}; a higher --opset may help)"
        )
    try:
        onnx.checker.check_model(model_proto)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"{source}: the converted ONNX graph is invalid: {first_line(exc)}") from exc


def max_inclusive_version(model_proto: Any) -> int:
    return next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), 17)


def io_spec(value: Any, source_name: str | None, source: Path) -> TensorSpec:
    return tensor_spec(value, source, source_name=source_name)
