"""The converter toolkit: what every format's converter needs, written once.

* **ONNX graph surgery**: served names for inputs and outputs (``rename_io``), the model's output
  order (``order_outputs``), a dynamic ``batch`` axis (``name_dynamic_dims``).
* **ONNX value-info -> TensorSpec** (``tensor_spec``) with one policy for element types the V2
  protocol cannot carry: a ``ConversionError`` naming the tensor and the type, never a silent FP32.
* **numpy dtype -> V2 datatype** (``datatype_for``) through ``bundle.datatypes``, the one table.
* **Seeded sample inputs** (``sample_inputs``) for export examples and verification alike: normal
  floats, integers in ``[0, integer_bound)`` (safe embedding indices), random booleans and strings,
  the batch axis ``batch`` rows long and unknown axes ``free_dim`` long.
* **Diagnostics**: ``first_line`` of an exception (skipping frameworks' banners), ``captured``
  framework output (off the terminal, at hand for messages), ``versions`` of the converter packages.

Only numpy and ``bundle`` are imported at module level; ``onnx`` is imported by the callers that
hand in its protos.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import logging
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bundle import datatypes
from bundle.datatypes import Datatype
from bundle.manifest import TensorSpec
from convert.errors import ConversionError

DEFAULT_INTEGER_BOUND = 10  # integer inputs of a model without an embedding are drawn from [0, 10)
FREE_DIM = 8  # the size of a variable non-batch axis in sample inputs
BATCH_DIM = "batch"  # the name of the dynamic batch axis in served graphs
SERVABLE = tuple(d.value for d in Datatype if d is not Datatype.BYTES)  # numbers and booleans


# ---- datatypes and tensor specs ---------------------------------------------------------------------
def datatype_for(dtype: Any, what: str, source: Path | str, allowed: Sequence[str] = SERVABLE) -> str:
    """The V2 datatype of a numpy dtype (or its name), or a ConversionError naming ``what``."""
    try:
        found = datatypes.from_numpy(np.dtype(dtype))
    except TypeError:
        found = None
    if found is None or found.value not in allowed:
        raise ConversionError(
            f"{source}: {what} has type {dtype}, which cannot be served; supported: {', '.join(allowed)}"
        )
    return found.value


def tensor_spec(
    value: Any, source: Path | str, *, dynamic_batch: bool = True, source_name: str | None = None
) -> TensorSpec:
    """An ONNX ``ValueInfoProto`` as a TensorSpec: unknown and non-positive dimensions are -1, and
    with ``dynamic_batch`` so is the first. A non-tensor or an element type outside the V2 table
    is refused, naming the tensor."""
    if not value.type.HasField("tensor_type"):
        raise ConversionError(f"{source}: {value.name!r} is not a tensor (sequences and maps are not supported)")
    tensor_type = value.type.tensor_type
    datatype = datatypes.from_onnx(tensor_type.elem_type)
    if datatype is None:
        raise ConversionError(
            f"{source}: tensor {value.name!r} has ONNX element type {tensor_type.elem_type}, which cannot be "
            f"served; supported: {', '.join(datatypes.NAMES)}"
        )
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim]
    if dims and dynamic_batch:
        dims[0] = -1
    return TensorSpec(
        name=value.name,
        datatype=datatype.value,
        shape=dims,
        source_name=source_name if source_name and source_name != value.name else None,
    )


# ---- ONNX graph surgery: served names, output order, the dynamic batch axis --------------------------
def all_tensor_names(graph: Any) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for graph_attr in subgraphs(node):
            names |= all_tensor_names(graph_attr)
    return names


def subgraphs(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def rename_tensor(graph: Any, old: str, new: str) -> None:
    """Rename every reference to ``old`` (subgraphs included: they may read outer tensors)."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for tensor in graph.initializer:
        if tensor.name == old:
            tensor.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for sub in subgraphs(node):
            rename_tensor(sub, old, new)


def rename_io(model_proto: Any, renames: dict[str, str], source: Path | str) -> None:
    """Give graph inputs and outputs their served names. An internal tensor that already holds a
    wanted name (tf2onnx names some after ops) is moved aside first."""
    graph = model_proto.graph
    io_names = {v.name for v in (*graph.input, *graph.output)}
    wanted = {old: new for old, new in renames.items() if old in io_names and old != new}
    missing = [old for old in renames if old not in io_names]
    if missing:
        raise ConversionError(
            f"{source}: the converted graph lacks {', '.join(missing)} (it has {', '.join(sorted(io_names))}); "
            f"an input the outputs do not depend on is dropped by tf2onnx: leave it out with --inputs"
        )
    taken = all_tensor_names(graph)
    for new in wanted.values():
        if new in taken and new not in wanted:
            aside = f"{new}__internal"
            while aside in taken:
                aside += "_"
            rename_tensor(graph, new, aside)
            taken.add(aside)
    # Two steps so that swapping names (a->b, b->a) cannot collide.
    for n, old in enumerate(wanted):
        rename_tensor(graph, old, f"__mp_tmp_{n}__")
    for n, new in enumerate(wanted.values()):
        rename_tensor(graph, f"__mp_tmp_{n}__", new)


def order_outputs(model_proto: Any, names: Sequence[str], source: Path | str) -> None:
    """Serve the outputs in the model's own order (tf2onnx sorts a dict's outputs by key)."""
    outputs = {o.name: o for o in model_proto.graph.output}
    if set(outputs) != set(names):
        raise ConversionError(
            f"{source}: the converted graph's outputs {sorted(outputs)} are not the expected {list(names)}"
        )
    ordered = [type(outputs[n])() for n in names]
    for copy, name in zip(ordered, names, strict=True):
        copy.CopyFrom(outputs[name])
    del model_proto.graph.output[:]
    model_proto.graph.output.extend(ordered)


def name_dynamic_dims(model_proto: Any) -> None:
    """Axis 0 of every input and output becomes ``batch`` (the runtime batches along it); other
    unknown axes get a stable name instead of a converter's ``unk__N``."""
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis == 0:
                dim.ClearField("dim_value")
                dim.dim_param = BATCH_DIM
            elif not dim.HasField("dim_value") and (not dim.dim_param or dim.dim_param.startswith("unk__")):
                dim.dim_param = f"{value.name}_dim{axis}"


# ---- sample inputs ------------------------------------------------------------------------------------
SampleSpec = tuple[str, Any, Sequence[int | None]]  # (name, numpy dtype or V2 datatype, shape)
WORDS = np.array(["a", "b", "c", "d"], dtype=object)


def sample_inputs(
    specs: Iterable[SampleSpec],
    seed: int,
    batch: int,
    integer_bound: int = DEFAULT_INTEGER_BOUND,
    free_dim: int = FREE_DIM,
) -> dict[str, np.ndarray]:
    """Seeded tensors: axis 0 is ``batch`` rows when it is unknown (None or negative), other
    unknown axes ``free_dim``; a fixed first axis (a model without a batch axis) stays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, dtype, shape in specs:
        dims = [(batch if axis == 0 else free_dim) if d is None or d < 0 else int(d) for axis, d in enumerate(shape)]
        numpy_dtype = Datatype(dtype).numpy if isinstance(dtype, str) and dtype in datatypes.NAMES else np.dtype(dtype)
        if numpy_dtype == np.bool_:
            arrays[name] = rng.random(dims) < 0.5
        elif numpy_dtype.kind in "iu":
            arrays[name] = rng.integers(0, integer_bound, size=dims).astype(numpy_dtype)
        elif numpy_dtype.kind in "OSU":
            arrays[name] = WORDS[rng.integers(0, len(WORDS), dims)].astype(object)
        else:
            arrays[name] = rng.standard_normal(dims).astype(numpy_dtype)
    return arrays


# ---- diagnostics --------------------------------------------------------------------------------------
UNINFORMATIVE_LINE = re.compile(r"^\s*(Graph execution error:?|Detected at node.*|Traceback.*|\s*)$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def first_line(exc: BaseException, *, innermost: bool = False, with_type: bool = False) -> str:
    """The first line of an exception that says something. Frameworks open with boilerplate
    (TensorFlow's "Graph execution error", "<reason>\\n [[{{node X}}]]") or wrap the real reason
    in a banner (torch's exporters: ``innermost`` follows ``__cause__`` to it)."""
    while innermost and exc.__cause__ is not None:
        exc = exc.__cause__
    text = ANSI_ESCAPE.sub("", str(getattr(exc, "message", None) or exc)).strip()
    raw = text.splitlines()
    line = ""
    for before, after in itertools.pairwise(raw):
        if after.strip().startswith("[[") and before.strip():
            line = before.strip()
            break
    if not line:
        lines = [item.strip() for item in raw if not UNINFORMATIVE_LINE.match(item)]
        line = lines[0] if lines else (raw[0].strip() if raw else "")
    line = line[:500]
    if with_type:
        return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line or type(exc).__name__


@dataclass
class Captured:
    """What a framework printed and warned while ``captured`` was active."""

    output: io.StringIO
    warnings: list[warnings.WarningMessage] = field(default_factory=list)


@contextlib.contextmanager
def captured(loggers: Mapping[str, int] | None = None, *, record_warnings: bool = False) -> Iterator[Captured]:
    """Keep a framework's progress and deprecation chatter (stdout, stderr, its loggers turned
    down to ``loggers``' levels, warnings) off the user's terminal, but at hand for error messages;
    ``record_warnings`` keeps the warnings too (the tracer's say a trace may not generalise)."""
    found = Captured(io.StringIO())
    saved = {name: logging.getLogger(name).level for name in loggers or {}}
    for name, level in (loggers or {}).items():
        logging.getLogger(name).setLevel(level)
    try:
        with (
            warnings.catch_warnings(record=record_warnings) as caught,
            contextlib.redirect_stdout(found.output),
            contextlib.redirect_stderr(found.output),
        ):
            warnings.simplefilter("always" if record_warnings else "ignore")
            if caught is not None:
                found.warnings = caught
            yield found
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def versions(*modules: str) -> dict[str, str]:
    """``__version__`` of the converter's packages (by module name: ``tensorflow`` is installed as
    tensorflow-cpu), for ``source.converters`` in the manifest."""
    found = {}
    for module in modules:
        try:
            found[module] = str(importlib.import_module(module).__version__)
        except (ImportError, AttributeError):
            continue
    return found
