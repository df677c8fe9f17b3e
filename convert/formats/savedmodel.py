"""TensorFlow SavedModel directories to ONNX.

Keras 3 cannot load a SavedModel, and a SavedModel need not come from Keras at all, so the model is
loaded with ``tf.saved_model.load`` and its ``serving_default`` signature (or its only signature) is
what gets converted. The signature's keys are the model's own names: they name the ONNX inputs and
outputs, ordered naturally (``output_0``, ``output_1``, ..., ``output_10``), with the TensorFlow
placeholder names (``serving_default_a:0``) recorded as ``source_name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
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


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    source = Path(source)
    if options.inputs:
        raise ConversionError(
            f"{source}: a SavedModel's inputs are its signature's keys; --inputs applies to frozen graphs "
            f"and checkpoints only"
        )
    tf = import_tensorflow()
    try:
        with quiet():
            loaded = tf.saved_model.load(str(source))
    except Exception as exc:
        raise ConversionError(f"{source}: cannot load the SavedModel: {first_line(exc)}") from exc
    name, signature = pick_signature(loaded, source)

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


def pick_signature(loaded: Any, source: Path) -> tuple[str, Any]:
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if SERVING_SIGNATURE in signatures:
        return SERVING_SIGNATURE, signatures[SERVING_SIGNATURE]
    if len(signatures) == 1:
        return next(iter(signatures.items()))
    if not signatures:
        raise ConversionError(
            f"{source}: the SavedModel has no signatures; export it with a serving signature "
            f"(tf.saved_model.save(model, path, signatures=...) or Keras model.export(path))"
        )
    raise ConversionError(
        f"{source}: the SavedModel has several signatures ({', '.join(sorted(signatures))}) and none is "
        f"{SERVING_SIGNATURE!r}; re-export it with a {SERVING_SIGNATURE!r} signature"
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
