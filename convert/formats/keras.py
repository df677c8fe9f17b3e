"""Keras models (``.h5`` and ``.keras``) to ONNX.

Which Keras loads a file matters: Keras 3 reads Keras-2-era HDF5 files only partly (and a tf_keras
model behaves differently in places), so the file's own ``keras_version`` picks the library:
2.x (or none, as in the oldest files) -> ``tf_keras``, 3.x -> ``keras``. A ``.keras`` zip records
the version in ``metadata.json``. When the chosen library cannot load the file the other one is
tried, and the fallback is noted in the manifest.

The model is called inside a tf.function with a None batch axis (tf2onnx's ``from_keras`` predates
Keras 3); inputs and outputs keep the model's names (input layer names, output layer names, or the
keys of dict inputs/outputs). An image model that starts with a ``Rescaling`` layer is served raw
0..255 pixels (it scales them itself).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bundle.manifest import ImagePreprocessing, TensorSpec
from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.formats.tf_common import (
    DEFAULT_INTEGER_BOUND,
    TfInput,
    TfModelInfo,
    base_versions,
    convert_callable,
    first_line,
    import_tensorflow,
    numpy_dtype_name,
    quiet,
    require_known_shapes,
    tensor_base_name,
    unique_names,
    v2_datatype,
    with_input_shapes,
)


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    source = Path(source)
    saved_version = file_keras_version(source)
    model, library, notes = load_model(source, saved_version)
    tf = import_tensorflow()

    structure = model_input_structure(model, source)
    inputs = with_input_shapes(keras_inputs(model, structure, source), options, source)
    require_known_shapes(inputs, source)
    layer_names = output_names_of(model)

    def run(tensors: list[Any]) -> dict[str, Any]:
        result = model(pack_inputs(structure, tensors), training=False)
        return name_outputs(result, layer_names)

    # Trace once eagerly on a tiny batch to learn the output names (dict keys, or layer names).
    all_names = list(name_outputs_probe(model, structure, inputs, layer_names, source))
    outputs = select_outputs(all_names, options, source)

    def reference(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [tf.convert_to_tensor(arrays[i.name]) for i in inputs]
        result = run(tensors)
        return {name: np.asarray(result[name]) for name in outputs}

    versions = base_versions() | {library: library_version(library)}
    info = TfModelInfo(
        source=source,
        source_format=options.format or ("keras" if zipfile.is_zipfile(source) else "keras_h5"),
        inputs=inputs,
        outputs=outputs,
        reference=reference,
        converters=versions,
        detail={"keras_version_in_file": saved_version or "unknown", "loaded_with": library},
        notes=notes,
        integer_bound=embedding_bound(model),
    )
    converted = convert_callable(run, info, options, workdir)
    converted.image = rescaled_image_input(model, converted.inputs)
    if converted.image is not None:
        converted.notes.append(
            f"input {converted.image.input} feeds a Rescaling layer: images are sent as raw 0..255 pixels"
        )
    return converted


def rescaled_image_input(model: Any, inputs: list[TensorSpec]) -> ImagePreprocessing | None:
    """A model whose first layer is ``Rescaling`` scales pixels itself, so the served image is raw
    0..255 values (scale 1), not the 0..1 the pipeline guesses for float image inputs."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].datatype not in ("FP16", "FP32", "FP64"):
        return None
    _, height, width, channels = inputs[0].shape
    if channels not in (1, 3) or height < 1 or width < 1:
        return None
    layers = [layer for layer in getattr(model, "layers", []) if type(layer).__name__ != "InputLayer"]
    if not layers or type(layers[0]).__name__ != "Rescaling":
        return None
    return ImagePreprocessing(
        input=inputs[0].name,
        layout="NHWC",
        height=height,
        width=width,
        color_mode="L" if channels == 1 else "RGB",
        datatype=inputs[0].datatype,
        scale=1.0,
        mean=[0.0],
        std=[1.0],
    )


# ---- which Keras --------------------------------------------------------------------------------
def file_keras_version(source: Path) -> str | None:
    """The Keras version that saved the file, from the HDF5 attributes or the zip's metadata.json."""
    if zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as archive:
                metadata = json.loads(archive.read("metadata.json"))
        except (KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ConversionError(f"{source}: not a Keras .keras archive (no readable metadata.json)") from exc
        return str(metadata.get("keras_version") or "") or None
    import h5py

    try:
        with h5py.File(source, "r") as f:
            attrs = dict(f.attrs)
    except OSError as exc:
        raise ConversionError(f"{source}: not a readable HDF5 file: {first_line(exc)}") from exc
    if "model_config" not in attrs:
        raise ConversionError(
            f"{source}: this HDF5 file holds weights only (no model_config attribute); save the whole model "
            f"with model.save(...) so that its architecture is included"
        )
    version = attrs.get("keras_version")
    if isinstance(version, bytes):
        version = version.decode()
    return str(version) if version else None


def preferred_library(saved_version: str | None) -> str:
    major = (saved_version or "2").split(".")[0]
    return "keras" if major.isdigit() and int(major) >= 3 else "tf_keras"


def load_model(source: Path, saved_version: str | None) -> tuple[Any, str, list[str]]:
    first = preferred_library(saved_version)
    order = [first, "keras" if first == "tf_keras" else "tf_keras"]
    failures: list[str] = []
    import_tensorflow()
    for library in order:
        try:
            with quiet():
                model = load_with(library, source)
        except Exception as exc:
            failures.append(f"{library}: {first_line(exc)}")
            continue
        notes = []
        if library != first:
            notes.append(f"loaded with {library} after {failures[0]} (file saved by Keras {saved_version})")
        return model, library, notes
    raise ConversionError(
        f"{source}: cannot load the Keras model (saved by Keras {saved_version or 'unknown'}): " + "; ".join(failures)
    )


def load_with(library: str, source: Path) -> Any:
    if library == "keras":
        import keras

        return keras.models.load_model(source, compile=False)
    import tf_keras

    return tf_keras.models.load_model(source, compile=False)


def library_version(library: str) -> str:
    if library == "keras":
        import keras

        return keras.__version__
    import tf_keras

    return tf_keras.__version__


# ---- inputs ----------------------------------------------------------------------------------------
def model_input_structure(model: Any, source: Path) -> Any:
    """The model's input structure: one tensor, a list, or a dict of Keras tensors."""
    try:
        return model.input
    except (AttributeError, ValueError):
        pass
    # A Keras 3 Sequential model knows its inputs (``inputs``) but, never having been called on a
    # symbolic tensor, not ``input``.
    try:
        inputs = list(model.inputs or [])
        problem = "no inputs"
    except (AttributeError, ValueError) as exc:
        inputs, problem = [], first_line(exc)
    if inputs:
        return inputs[0] if len(inputs) == 1 else inputs
    raise ConversionError(
        f"{source}: the model has no defined inputs ({problem}); save a functional model or a "
        f"Sequential model that starts with keras.Input(shape=...)"
    )


def keras_inputs(model: Any, structure: Any, source: Path) -> list[TfInput]:
    if isinstance(structure, dict):
        pairs = list(structure.items())
    else:
        tensors = list(structure) if isinstance(structure, (list, tuple)) else [structure]
        layer_names = getattr(model, "input_names", None)
        if not (isinstance(layer_names, list) and len(layer_names) == len(tensors)):
            layer_names = [tensor_base_name(str(getattr(t, "name", f"input_{n}"))) for n, t in enumerate(tensors)]
        pairs = list(zip(layer_names, tensors, strict=True))
    names = unique_names([str(name) for name, _ in pairs])
    inputs = []
    for name, (_, tensor) in zip(names, pairs, strict=True):
        dtype = numpy_dtype_name(tensor.dtype)
        v2_datatype(dtype, f"input {name}", source)
        shape = tuple(None if d is None else int(d) for d in tensor.shape)
        if not shape:
            raise ConversionError(f"{source}: input {name} is a scalar; Keras inputs need a batch axis")
        inputs.append(TfInput(name=name, dtype=dtype, shape=(None, *shape[1:])))
    return inputs


def pack_inputs(structure: Any, tensors: list[Any]) -> Any:
    if isinstance(structure, dict):
        return dict(zip(structure, tensors, strict=True))
    if isinstance(structure, (list, tuple)):
        return list(tensors)
    return tensors[0]


def embedding_bound(model: Any) -> int:
    """Random integer inputs must be valid indices: stay below the smallest Embedding table."""
    bounds = [
        int(layer.input_dim)
        for layer in getattr(model, "layers", [])
        if type(layer).__name__ == "Embedding" and getattr(layer, "input_dim", None)
    ]
    return max(1, min(bounds)) if bounds else DEFAULT_INTEGER_BOUND


# ---- outputs ---------------------------------------------------------------------------------------
def output_names_of(model: Any) -> list[str] | None:
    """Output layer names; a Keras 3 Sequential model has none recorded, so its last layer's name
    (what tf_keras reports for the same model)."""
    names = getattr(model, "output_names", None)
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    layers = getattr(model, "layers", None)
    if type(model).__name__ == "Sequential" and layers:
        return [str(layers[-1].name)]
    return None


def name_outputs(result: Any, layer_names: list[str] | None) -> dict[str, Any]:
    """The model's result as {name: tensor}: dict keys, else output layer names, else output_N."""
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    flat = list(result) if isinstance(result, (list, tuple)) else [result]
    if layer_names and len(layer_names) == len(flat):
        names = unique_names(layer_names)
    else:
        names = ["output"] if len(flat) == 1 else [f"output_{n}" for n in range(len(flat))]
    return dict(zip(names, flat, strict=True))


def name_outputs_probe(
    model: Any, structure: Any, inputs: list[TfInput], layer_names: list[str] | None, source: Path
) -> list[str]:
    """The output names, from one call on a batch of 1."""
    import tensorflow as tf

    tensors = [tf.zeros([1, *i.shape[1:]], dtype=tf.as_dtype(i.dtype)) for i in inputs]
    try:
        result = model(pack_inputs(structure, tensors), training=False)
    except Exception as exc:
        raise ConversionError(f"{source}: calling the Keras model failed: {first_line(exc)}") from exc
    return list(name_outputs(result, layer_names))


def select_outputs(names: list[str], options: ConvertOptions, source: Path) -> list[str]:
    """``--outputs`` picks a subset (in the given order) by name; default: all, in the model's order."""
    if not options.outputs:
        return names
    unknown = [n for n in options.outputs if tensor_base_name(n) not in names]
    if unknown:
        raise ConversionError(
            f"{source}: --outputs names {', '.join(unknown)}, not outputs of the model (outputs: {', '.join(names)})"
        )
    return [tensor_base_name(n) for n in options.outputs]
