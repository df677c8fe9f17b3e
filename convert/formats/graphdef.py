"""Frozen TensorFlow GraphDefs (``.pb``) to ONNX, and the graph analysis checkpoints share.

A frozen graph does not say which tensors are its inputs and outputs, so they are found by
``tf_interface`` (the inference subgraph of a graph that may hold a whole training script: labels,
loss, gradients, optimizer, summaries); ``--inputs``/``--outputs`` override either (``x`` or
``x:0``). Served names drop the ``:0`` suffix. A ``PlaceholderWithDefault`` that is not an input
keeps its default (it becomes an ``Identity`` of it). Scalar ``keep_prob`` and ``is_training``
placeholders, which TF1 scripts fed 1.0 and False at inference, become those constants (noted in
the manifest).
Placeholder shapes give the input shapes; the batch axis is made dynamic in the graph itself, and
``--input-shape`` fills unknown dimensions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, GraphOptions, tf_interface
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

KEEP_PROB = re.compile(r"keep_?prob")
TRAINING_SWITCH = re.compile(r"^(is_?)?train(ing)?(_?(phase|mode|flag))?(_\d+)?$|^phase(_\d+)?$|learning_phase")


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
    interface: tf_interface.Interface | None = None,
    served_names: dict[str, str] | None = None,
) -> Converted:
    """Find inputs/outputs (unless ``interface`` fixes them, as a TF1 SavedModel's signature or a
    checkpoint's full training graph does), make the batch axis dynamic, convert, and return a
    Converted whose reference runs the original graph in a tf.compat.v1 Session.

    ``served_names`` maps tensor names to served names (default: the op name)."""
    tf = import_tensorflow()
    graph = import_graph(graph_def, source)
    if interface is None:
        interface = tf_interface.choose(graph, source, options.of(GraphOptions).inputs, options.outputs)
    inputs = [tf_interface.resolve(graph, name, "--inputs", source) for name in interface.inputs]
    outputs = [tf_interface.resolve(graph, name, "--outputs", source) for name in interface.outputs]
    switches = inference_switches(inputs, explicit=interface.inputs_given)
    if switches:
        graph_def = with_constants(graph_def, switches)
        inputs = [t for t in inputs if t.op.name not in switches]
        if not inputs:
            raise ConversionError(f"{source}: no inputs left besides the switches {', '.join(switches)}")
        interface.inputs = [t.name for t in inputs]
        interface.left_out.update({op: f"fixed to {value} for inference" for op, value in switches.items()})
    notes = [f"placeholder {op} fixed to {value} for inference" for op, value in switches.items()]
    graph_def = with_defaults(graph_def, keep={t.op.name for t in inputs})

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
        detail={**(detail or {}), "interface": interface.record()},
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


def with_defaults(graph_def: Any, keep: set[str]) -> Any:
    """A copy where each ``PlaceholderWithDefault`` not in ``keep`` is an ``Identity`` of its
    default: a learning rate or keep probability with a default is never an input (tf2onnx would
    otherwise expose it as one)."""
    tf = import_tensorflow()
    updated = tf.compat.v1.GraphDef()
    updated.CopyFrom(graph_def)
    for node in updated.node:
        if node.op == "PlaceholderWithDefault" and node.name not in keep:
            dtype = node.attr["dtype"].type
            node.op = "Identity"
            node.ClearField("attr")
            node.attr["T"].type = dtype
    return updated


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
