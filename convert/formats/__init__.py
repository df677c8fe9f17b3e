"""Source-format converters behind one small registry.

A converter is a function ``convert(source, options, workdir) -> Converted`` in its own module,
listed in ``CONVERTERS`` by dotted path so that detecting a format imports no framework. The
pipeline (``convert.pipeline``) runs the converter in a subprocess, verifies ``Converted`` with
``convert.verify`` inside that subprocess, and writes the bundle from the picklable remainder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from bundle.manifest import ImagePreprocessing, TensorSpec

# format name -> "module:function". Names are also the values of --format and SourceInfo.format.
CONVERTERS: dict[str, str] = {
    "keras_h5": "convert.formats.keras:convert",
    "keras": "convert.formats.keras:convert",
    "savedmodel": "convert.formats.savedmodel:convert",
    "graphdef": "convert.formats.graphdef:convert",
    "checkpoint": "convert.formats.checkpoint:convert",
    "torchscript": "convert.formats.torchscript:convert",
    "torch_pickle": "convert.formats.torch_pickle:convert",
    "sklearn": "convert.formats.sklearn:convert",
    "onnx": "convert.formats.onnx:convert",
    "pmml": "convert.formats.pmml:convert",
}

Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
MakeInputs = Callable[[int, int], dict[str, np.ndarray]]  # (seed, batch) -> inputs


@dataclass
class ImageOptions:
    """Command-line overrides for image preprocessing (None: the converter's guess)."""

    color_mode: str | None = None  # RGB | BGR | L
    scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: str | None = None  # NHWC | NCHW
    disable: bool = False  # --no-image: never treat an input as an image


@dataclass
class ConvertOptions:
    format: str | None = None  # --format override; None: detected
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # --input-shape NAME=d0,d1,...
    input_dtype: str = "FP32"  # --input-dtype, V2 datatype of --input-shape inputs
    inputs: list[str] | None = None  # --inputs for graphs/checkpoints
    outputs: list[str] | None = None  # --outputs
    signature: str | None = None  # --signature: the SavedModel signature to serve
    opset: int = 17
    target: Literal["onnx", "pmml"] | None = None  # scikit-learn: pmml (default) or onnx
    sample_csv: Path | None = None  # scikit-learn/PMML: rows to verify on
    image: ImageOptions = field(default_factory=ImageOptions)
    labels: list[str] | None = None  # --labels FILE (one per line)
    verify: bool = True
    atol: float = 1e-4
    rtol: float = 1e-3
    verify_batch: int = 4
    seed: int = 0
    # Set by the pipeline: the unpacked model root, so a converter may look beside the model file
    # (a pickled PyTorch module's class file) without ever reaching outside what was handed over.
    source_root: Path | None = None
    max_batch_size: int = 64  # --max-batch-size: recorded for models with a dynamic batch axis


@dataclass
class Converted:
    """What a converter hands back. ``reference`` and ``make_inputs`` live only inside the
    conversion subprocess (they hold the loaded source model); everything else is picklable."""

    model_path: Path  # model.onnx or model.pmml written inside workdir
    format: Literal["onnx", "pmml"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source_format: str
    converters: dict[str, str] = field(default_factory=dict)  # package -> version
    opset: int | None = None
    max_batch_size: int = -1  # -1: dynamic batch axis (written as a Triton max_batch_size); 0: none
    image: ImagePreprocessing | None = None
    labels: list[str] | None = None
    label_output: str | None = None
    target: str | None = None
    detail: dict = field(default_factory=dict)  # recorded in SourceInfo.detail (e.g. checkpoint step)
    notes: list[str] = field(default_factory=list)  # recorded in Parity.notes
    # The source framework's own prediction on ONNX-named inputs, returning ONNX-named outputs.
    reference: Predict | None = None
    # Sample inputs for verification; None: seeded random tensors from ``inputs`` specs.
    make_inputs: MakeInputs | None = None
    # Outputs compared as labels (exact match) rather than numerically.
    label_outputs: list[str] = field(default_factory=list)


def get_converter(fmt: str) -> Callable[[Path, ConvertOptions, Path], Converted]:
    try:
        module_name, func = CONVERTERS[fmt].split(":")
    except KeyError:
        raise KeyError(f"unknown format {fmt!r}; supported: {', '.join(sorted(CONVERTERS))}") from None
    return getattr(importlib.import_module(module_name), func)
