"""Frozen TensorFlow GraphDefs (``.pb``) to ONNX, and the graph analysis checkpoints share.

A frozen graph does not say which tensors are its inputs and outputs, so they are found:

* outputs: ops none of whose outputs anything consumes, that depend on at least one placeholder,
  and that are not bookkeeping (saver ``save/``, ``init``, ``gradients/``, ``loss``, optimizer and
  summary scopes, NoOp/Assign/Save/Restore ops, and whatever those feed). When there is no such op
  because the model's last op feeds only the loss, the earliest ops read only by bookkeeping are
  the outputs (the logits, not the loss's internals).
* inputs: the ``Placeholder`` ops the outputs depend on (a labels placeholder that feeds only the loss
  is not an input; ``PlaceholderWithDefault`` such as Keras' learning phase never is).

``--inputs``/``--outputs`` override either (``x`` or ``x:0``). Served names drop the ``:0`` suffix.
Scalar ``keep_prob`` and ``is_training`` placeholders, which TF1 scripts fed 1.0 and False at
inference, become those constants (noted in the manifest).
Placeholder shapes give the input shapes; the batch axis is made dynamic in the graph itself, and
``--input-shape`` fills unknown dimensions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.formats.tf_common import (
    DEFAULT_INTEGER_BOUND,
    TfInput,
    TfModelInfo,
    base_versions,
    convert_graph_def,
    first_line,
    import_tensorflow,
    numpy_dtype_name,
    sample_inputs,
    tensor_base_name,
    unique_names,
    v2_datatype,
    with_input_shapes,
)

# Name-scope components that mark training and bookkeeping ops (compared case-insensitively,
# with TensorFlow's ``_1`` uniquifying suffix removed).
BOOKKEEPING_SCOPES = re.compile(
    r"^(save|restore|init|init_all_tables|gradients|loss|losses|train|training|train_op|optimizer|"
    r"adam|sgd|gradientdescent|momentum|rmsprop|adagrad|adadelta|ftrl|summary|summaries|metrics|"
    r"global_step|.*_grad)$",
    re.IGNORECASE,
)
BOOKKEEPING_OPS = {
    "NoOp",
    "Assign",
    "AssignAdd",
    "AssignSub",
    "AssignVariableOp",
    "SaveV2",
    "Save",
    "SaveSlices",
    "RestoreV2",
    "Restore",
    "RestoreSlice",
    "MergeV2Checkpoints",
    "ShardedFilename",
    "StringJoin",
    "ScalarSummary",
    "HistogramSummary",
    "ImageSummary",
    "MergeSummary",
    "TensorSummary",
    "TensorSummaryV2",
    "Print",
    "PrintV2",
    "Assert",
    "VarIsInitializedOp",
    "IsVariableInitialized",
}
KEEP_PROB = re.compile(r"keep_?prob")
TRAINING_SWITCH = re.compile(r"^(is_?)?train(ing)?(_?(phase|mode|flag))?(_\d+)?$|^phase(_\d+)?$|learning_phase")
NEVER_OUTPUTS = {"Placeholder", "PlaceholderWithDefault", "Const", "VariableV2", "Variable", "VarHandleOp"}


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    source = Path(source)
    graph_def = read_graph_def(source)
    return convert_frozen(graph_def, source, options, workdir, source_format=options.format or "graphdef")


def read_graph_def(source: Path) -> Any:
    """A binary GraphDef, or a text one (``.pbtxt``)."""
    tf = import_tensorflow()
    from google.protobuf import text_format

    data = source.read_bytes()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
        if graph_def.node:
            return graph_def
    except Exception:
        pass
    try:
        graph_def = tf.compat.v1.GraphDef()
        text_format.Parse(data.decode("utf-8"), graph_def)
    except Exception as exc:
        raise ConversionError(f"{source}: not a TensorFlow GraphDef (neither binary nor text protobuf)") from exc
    if not graph_def.node:
        raise ConversionError(f"{source}: the GraphDef is empty")
    return graph_def


def convert_frozen(
    graph_def: Any,
    source: Path,
    options: ConvertOptions,
    workdir: Path,
    *,
    source_format: str,
    detail: dict[str, Any] | None = None,
    output_ops: list[str] | None = None,
    input_tensors: list[str] | None = None,
    output_tensors: list[str] | None = None,
    served_names: dict[str, str] | None = None,
) -> Converted:
    """Find inputs/outputs (unless given), make the batch axis dynamic, convert, and return a
    Converted whose reference runs the original graph in a tf.compat.v1 Session.

    ``input_tensors``/``output_tensors`` (tensor names) fix the interface, as a TF1 SavedModel's
    signature does; ``served_names`` maps tensor names to served names (default: the op name)."""
    tf = import_tensorflow()
    graph = import_graph(graph_def, source)
    outputs = (
        [resolve_tensor(graph, name, "--outputs", source) for name in output_tensors or options.outputs or []]
        or [t for op in (output_ops or []) for t in graph.get_operation_by_name(op).outputs]
        or find_output_tensors(graph, source)
    )
    inputs = [
        resolve_tensor(graph, name, "--inputs", source) for name in input_tensors or options.inputs or []
    ] or find_input_tensors(graph, outputs, source)
    overlap = {t.name for t in inputs} & {t.name for t in outputs}
    if overlap:
        raise ConversionError(f"{source}: {', '.join(sorted(overlap))} cannot be both an input and an output")
    switches = inference_switches(inputs, explicit=bool(input_tensors or options.inputs))
    if switches:
        graph_def = with_constants(graph_def, switches)
        inputs = [t for t in inputs if t.op.name not in switches]
        if not inputs:
            raise ConversionError(f"{source}: no inputs left besides the switches {', '.join(switches)}")
    notes = [f"placeholder {op} fixed to {value} for inference" for op, value in switches.items()]

    names = served_names or {}
    served_inputs = unique_names([names.get(t.name) or tensor_base_name(t.name) for t in inputs])
    served_outputs = unique_names([names.get(t.name) or tensor_base_name(t.name) for t in outputs])
    model_inputs = []
    fixed_batch: dict[str, int] = {}
    for name, tensor in zip(served_inputs, inputs, strict=True):
        dtype = numpy_dtype_name(tensor.dtype)
        v2_datatype(dtype, f"input {name}", source)
        rank = tensor.shape.rank
        shape = tuple(tensor.shape.as_list()) if rank is not None else ()
        if rank is None and name not in options.input_shapes and tensor.name not in options.input_shapes:
            raise ConversionError(
                f"{source}: input {name} has an unknown rank; give its shape with --input-shape {name}=1,d1,d2,..."
            )
        if rank == 0:
            raise ConversionError(f"{source}: input {name} is a scalar; only inputs with a batch axis can be served")
        if shape and shape[0] is not None:
            fixed_batch[name] = int(shape[0])
        model_inputs.append(
            TfInput(name=name, dtype=dtype, shape=(None, *shape[1:]) if shape else (), source_name=tensor.name)
        )
    model_inputs = with_input_shapes(model_inputs, options, source)
    for spec in model_inputs:
        for tensor_dim in spec.shape[1:]:
            if tensor_dim is None:
                raise ConversionError(
                    f"{source}: input {spec.name} has unknown dimensions; give them with --input-shape "
                    f"{spec.name}=1,d1,..."
                )

    graph_def = with_placeholder_shapes(graph_def, model_inputs)
    run_graph = import_graph(graph_def, source)
    session = tf.compat.v1.Session(graph=run_graph)
    input_names = [t.name for t in inputs]
    output_names = [t.name for t in outputs]

    def reference(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {tensor: arrays[name] for tensor, name in zip(input_names, served_inputs, strict=True)}
        try:
            values = session.run(output_names, feed_dict=feed)
        except Exception as exc:
            hint = ""
            if fixed_batch:
                fixed = ", ".join(f"{n} (batch {b})" for n, b in fixed_batch.items())
                hint = (
                    f"; the graph was built for a fixed batch size ({fixed}) and is served with a dynamic one, "
                    f"which works only if no op hard-codes that size: re-export it with a None batch dimension"
                )
            raise ConversionError(f"{source}: TensorFlow cannot run the graph: {first_line(exc)}{hint}") from exc
        return dict(zip(served_outputs, (np.asarray(v) for v in values), strict=True))

    if fixed_batch:  # fail here, with the reason, rather than in verification with onnxruntime's words
        reference(sample_inputs(model_inputs, 0, 2, DEFAULT_INTEGER_BOUND))

    info = TfModelInfo(
        source=source,
        source_format=source_format,
        inputs=model_inputs,
        outputs=served_outputs,
        reference=reference,
        output_source_names=dict(zip(served_outputs, output_names, strict=True)),
        converters=base_versions(),
        detail=dict(detail or {}),
        notes=notes
        + [
            f"input {n} had a fixed batch size {b} in the graph; served with a dynamic one"
            for n, b in fixed_batch.items()
        ],
    )
    return convert_graph_def(graph_def, input_names, output_names, info, options, workdir)


# ---- TF1 inference switches ----------------------------------------------------------------------
def inference_switches(inputs: list[Any], explicit: bool) -> dict[str, bool | float]:
    """Scalar placeholders that TF1 training scripts fed differently at inference time: a float
    ``keep_prob`` (1.0: no dropout) and a bool ``is_training``/``training``/``phase`` (False). They
    are not model inputs (no batch axis), so they become constants. Found ones only: inputs named
    with ``--inputs`` are taken as given."""
    if explicit:
        return {}
    switches: dict[str, bool | float] = {}
    for tensor in inputs:
        if tensor.shape.rank != 0 or tensor.op.type != "Placeholder":
            continue
        leaf = tensor.op.name.split("/")[-1].lower()
        if tensor.dtype.is_floating and KEEP_PROB.search(leaf):
            switches[tensor.op.name] = 1.0
        elif tensor.dtype.is_bool and TRAINING_SWITCH.search(leaf):
            switches[tensor.op.name] = False
    return switches


def with_constants(graph_def: Any, values: dict[str, bool | float]) -> Any:
    """A copy where each named placeholder is a Const of the same name and type (consumers unchanged)."""
    tf = import_tensorflow()
    updated = tf.compat.v1.GraphDef()
    updated.CopyFrom(graph_def)
    for node in updated.node:
        if node.name in values:
            dtype = tf.as_dtype(node.attr["dtype"].type)
            node.op = "Const"
            node.ClearField("attr")
            node.attr["dtype"].type = dtype.as_datatype_enum
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(values[node.name], dtype=dtype, shape=[]))
    return updated


# ---- graph analysis --------------------------------------------------------------------------------
def import_graph(graph_def: Any, source: Path) -> Any:
    tf = import_tensorflow()
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
    except Exception as exc:
        raise ConversionError(f"{source}: TensorFlow cannot import the graph: {first_line(exc)}") from exc
    return graph


def resolve_tensor(graph: Any, name: str, flag: str, source: Path) -> Any:
    """``x`` or ``x:0`` -> the tensor; an op name alone means its first output."""
    tensor_name = name if ":" in name else f"{name}:0"
    try:
        return graph.get_tensor_by_name(tensor_name)
    except (KeyError, ValueError) as exc:
        raise ConversionError(f"{source}: {flag} names {name!r}, which is not a tensor of the graph") from exc


def is_bookkeeping(op: Any) -> bool:
    if op.type in BOOKKEEPING_OPS or op.type.startswith(("Apply", "ResourceApply", "Save", "Restore")):
        return True
    return any(BOOKKEEPING_SCOPES.match(re.sub(r"_\d+$", "", part)) for part in op.name.split("/"))


def bookkeeping_ops(graph: Any) -> set[str]:
    """Bookkeeping ops and everything their data flows into (an update op computed from gradients
    is training machinery too, whatever its name). Control edges do not count: TF2 frozen graphs
    hang the output ``Identity`` on a NoOp."""
    marked = {op.name for op in graph.get_operations() if is_bookkeeping(op)}
    changed = True
    while changed:
        changed = False
        for op in graph.get_operations():
            if op.name in marked:
                continue
            if any(t.op.name in marked for t in op.inputs):
                marked.add(op.name)
                changed = True
    return marked


def ancestors(ops: Iterable[Any]) -> set[str]:
    seen: set[str] = set()
    stack = list(ops)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
    return seen


def find_output_tensors(graph: Any, source: Path) -> list[Any]:
    """Sinks first: ops nothing consumes. Only when there are none (the model's last op feeds just
    the loss) fall back to ops consumed only by bookkeeping, keeping the earliest of those (the
    logits, not the loss's own reshapes downstream of them)."""
    ignored = bookkeeping_ops(graph)
    placeholders = {op.name for op in graph.get_operations() if op.type == "Placeholder"}
    sinks, fed_to_bookkeeping = [], []
    for op in graph.get_operations():
        if op.name in ignored or op.type in NEVER_OUTPUTS or not op.outputs:
            continue
        consumers = [c for t in op.outputs for c in t.consumers()]
        if any(c.name not in ignored for c in consumers):
            continue
        if not ancestors([op]) & placeholders:
            continue  # constant-only subgraphs (and variable reads) are not model outputs
        (fed_to_bookkeeping if consumers else sinks).append(op)
    if not sinks and fed_to_bookkeeping:
        names = {op.name for op in fed_to_bookkeeping}
        sinks = [op for op in fed_to_bookkeeping if not (ancestors(t.op for t in op.inputs) & names)]
    if not sinks:
        raise ConversionError(
            f"{source}: no output found (no op that depends on a placeholder and feeds nothing); name them "
            f"with --outputs"
        )
    return [t for op in sinks for t in op.outputs]


def find_input_tensors(graph: Any, outputs: list[Any], source: Path) -> list[Any]:
    needed = ancestors(t.op for t in outputs)
    found = [op.outputs[0] for op in graph.get_operations() if op.type == "Placeholder" and op.name in needed]
    if not found:
        raise ConversionError(
            f"{source}: the outputs {', '.join(t.name for t in outputs)} depend on no Placeholder; name the inputs "
            f"with --inputs"
        )
    return found


def with_placeholder_shapes(graph_def: Any, inputs: list[TfInput]) -> Any:
    """A copy whose input placeholders have a dynamic batch axis and the filled-in dimensions, so
    that tf2onnx (and the reference session) see the shapes the model is served with."""
    tf = import_tensorflow()
    updated = tf.compat.v1.GraphDef()
    updated.CopyFrom(graph_def)
    by_op = {i.source_name.split(":")[0]: i for i in inputs if i.source_name}
    for node in updated.node:
        spec = by_op.get(node.name)
        if spec is None or node.op != "Placeholder":
            continue
        shape = tf.TensorShape([None, *spec.shape[1:]]).as_proto()
        node.attr["shape"].shape.CopyFrom(shape)
    return updated
