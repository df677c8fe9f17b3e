"""TensorFlow SavedModel directories to ONNX.

Keras 3 cannot load a SavedModel, and a SavedModel need not come from Keras at all, so the model is
loaded with ``tf.saved_model.load`` and one signature is what gets converted: ``--signature NAME``,
else ``serving_default``, else the only one; with several and none of them ``serving_default``
the converter names them and refuses rather than guess. The signature's keys are the model's own
names: they name the ONNX inputs and outputs, ordered naturally (``output_0``, ``output_1``, ...,
``output_10``), with the TensorFlow placeholder names (``serving_default_a:0``) recorded as ``source_name``.

TF1 SavedModels (``SavedModelBuilder``, ``simple_save``) hold reference variables that the TF2 loader
can only wrap, not freeze; they are loaded into a ``tf.compat.v1`` Session instead, frozen, and
converted like a GraphDef with the signature's tensors and keys. One saved without any signature
(a training script's ``Builder.add_meta_graph_and_variables(session, tags)``) is converted like a
checkpoint: the inference subgraph is found in the training graph (``tf_interface``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, GraphOptions, SignatureOptions, tf_interface
from convert.formats.checkpoint import freeze_session
from convert.formats.graphdef import convert_frozen
from convert.formats.tf_common import (
    TfInput,
    TfModelInfo,
    base_versions,
    convert_callable,
    first_line,
    import_tensorflow,
    natural_key,
    numpy_dtype_name,
    quiet,
    tensor_base_name,
    v2_datatype,
)

SERVING_SIGNATURE = "serving_default"
SERVING_TAG = "serve"


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    source = Path(source)
    tf = import_tensorflow()
    v1_meta_graphs = tf1_meta_graphs(source)
    if v1_meta_graphs:
        return convert_tf1(source, v1_meta_graphs, options, workdir)
    if options.of(GraphOptions).inputs:
        raise ConversionError(
            f"{source}: a SavedModel's inputs are its signature's keys; --inputs applies to frozen graphs, "
            f"checkpoints and TF1 SavedModels without signatures only"
        )
    try:
        with quiet():
            loaded = tf.saved_model.load(str(source))
    except Exception as exc:
        raise ConversionError(f"{source}: cannot load the SavedModel: {first_line(exc)}") from exc
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    name = pick_signature(signatures, source, options.of(SignatureOptions).signature)
    signature = signatures[name]

    input_specs = signature.structured_input_signature[1]
    if signature.structured_input_signature[0]:
        raise ConversionError(f"{source}: signature {name!r} takes positional arguments; only keyword signatures serve")
    keys = sorted(input_specs, key=natural_key)
    placeholders = {t.name: t for t in signature.inputs}
    inputs = []
    for key in keys:
        spec = input_specs[key]
        dtype = numpy_dtype_name(spec.dtype)
        v2_datatype(dtype, f"input {key}", source)
        shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
        if not shape:
            raise ConversionError(
                f"{source}: signature input {key} has {'no' if shape is None else 'a scalar'} shape; "
                f"only inputs with a batch axis can be served"
            )
        if shape[0] is not None:
            raise ConversionError(
                f"{source}: signature input {key} has a fixed batch size {shape[0]}; export the model with a None "
                f"batch dimension (e.g. tf.TensorSpec([None, ...]))"
            )
        tf_name = next((n for n in placeholders if tensor_base_name(n) in (key, f"{name}_{key}")), None)
        inputs.append(TfInput(name=key, dtype=dtype, shape=shape, source_name=tf_name))

    all_outputs = sorted(signature.structured_outputs, key=natural_key)
    outputs = select_outputs(all_outputs, options, source)

    def run(tensors: list[Any]) -> dict[str, Any]:
        return signature(**dict(zip(keys, tensors, strict=True)))

    def reference(arrays: dict[str, np.ndarray], _keep_alive: Any = loaded) -> dict[str, np.ndarray]:
        # _keep_alive: a signature's variables live only as long as the loaded object does.
        result = run([tf.convert_to_tensor(arrays[key]) for key in keys])
        return {o: result[o].numpy() for o in outputs}

    info = TfModelInfo(
        source=source,
        source_format=options.format or "savedmodel",
        inputs=inputs,
        outputs=outputs,
        reference=reference,
        converters=base_versions(),
        detail={"signature": name},
    )
    return convert_callable(run, info, options, workdir)


def pick_signature(signatures: dict[str, Any], source: Path, wanted: str | None = None) -> str:
    """``--signature NAME``, else ``serving_default``, else the only signature."""
    if wanted is not None:
        if wanted not in signatures:
            raise ConversionError(
                f"{source}: --signature {wanted!r}: the SavedModel has no such signature "
                f"(signatures: {', '.join(sorted(signatures)) or 'none'})"
            )
        return wanted
    if SERVING_SIGNATURE in signatures:
        return SERVING_SIGNATURE
    if len(signatures) == 1:
        return next(iter(signatures))
    if not signatures:
        raise ConversionError(
            f"{source}: the SavedModel has no signatures; export it with a serving signature "
            f"(tf.saved_model.save(model, path, signatures=...) or Keras model.export(path))"
        )
    raise ConversionError(
        f"{source}: the SavedModel has several signatures ({', '.join(sorted(signatures))}) and none is "
        f"{SERVING_SIGNATURE!r}; pick one with --signature NAME"
    )


def select_outputs(names: list[str], options: ConvertOptions, source: Path) -> list[str]:
    if not options.outputs:
        return names
    unknown = [n for n in options.outputs if n not in names]
    if unknown:
        raise ConversionError(
            f"{source}: --outputs names {', '.join(unknown)}, not outputs of the signature "
            f"(outputs: {', '.join(names)})"
        )
    return list(options.outputs)


# ---- TF1 SavedModels ---------------------------------------------------------------------------
def tf1_meta_graphs(source: Path) -> list[Any]:
    """The meta graphs of a TF1 SavedModel (no object graph: nothing for the TF2 loader to restore
    as Python objects); empty for a TF2 SavedModel or when saved_model.pb cannot be read here."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = source / "saved_model.pb"
    if not path.is_file():
        return []
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(path.read_bytes())
    except Exception:
        return []
    if any(len(m.object_graph_def.nodes) for m in saved_model.meta_graphs):
        return []
    return list(saved_model.meta_graphs)


def convert_tf1(source: Path, meta_graphs: list[Any], options: ConvertOptions, workdir: Path) -> Converted:
    tf = import_tensorflow()
    tags = pick_tags(meta_graphs, source)
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session, quiet():
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, tags, str(source))
        except Exception as exc:
            raise ConversionError(f"{source}: cannot load the TF1 SavedModel: {first_line(exc)}") from exc
        signatures = dict(meta_graph.signature_def)
        detail = {"tags": sorted(tags), "saved_by": "TensorFlow 1 (SavedModelBuilder)"}
        served: dict[str, str] | None = None
        if not signatures and options.of(SignatureOptions).signature is None:
            # A training script's export: no signature says what the model is; find it in the graph.
            interface = tf_interface.choose(graph, source, options.of(GraphOptions).inputs, options.outputs)
        else:
            if options.of(GraphOptions).inputs:
                raise ConversionError(
                    f"{source}: a SavedModel's inputs are its signature's keys; --inputs applies to frozen graphs, "
                    f"checkpoints and SavedModels without signatures only"
                )
            name = pick_signature(signatures, source, options.of(SignatureOptions).signature)
            signature = signatures[name]
            input_keys = sorted(signature.inputs, key=natural_key)
            output_keys = select_outputs(sorted(signature.outputs, key=natural_key), options, source)
            input_tensors = [signature.inputs[k].name for k in input_keys]
            output_tensors = [signature.outputs[k].name for k in output_keys]
            interface = tf_interface.Interface(
                inputs=input_tensors, outputs=output_tensors, how=f"signature {name}", inputs_given=True
            )
            served = dict(zip(input_tensors, input_keys, strict=True)) | dict(
                zip(output_tensors, output_keys, strict=True)
            )
            detail["signature"] = name
        frozen = freeze_session(session, interface, source)
    return convert_frozen(
        frozen,
        source,
        options,
        workdir,
        source_format=options.format or "savedmodel",
        detail=detail,
        interface=interface,
        served_names=served,
    )


def pick_tags(meta_graphs: list[Any], source: Path) -> list[str]:
    tag_sets = [list(m.meta_info_def.tags) for m in meta_graphs]
    for tags in tag_sets:
        if SERVING_TAG in tags:
            return tags
    if len(tag_sets) == 1:
        return tag_sets[0]
    raise ConversionError(
        f"{source}: the SavedModel has several meta graphs ({tag_sets}) and none is tagged {SERVING_TAG!r}"
    )
