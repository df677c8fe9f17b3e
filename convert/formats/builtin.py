"""The formats this project ships, registered like any plug-in (``convert.formats.register``).

Their converters are named by dotted path and imported only in the conversion child; their
sniffers read bytes (``convert.detect``), so detection imports no framework.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from convert import detect
from convert.formats import Detection, Format, GraphOptions, SignatureOptions, TabularOptions, register


def _directory(root: Path) -> Path:
    return root if root.is_dir() else root.parent


def _file_format(name: str, family: str, description: str, module: str, options: tuple[type, ...] = ()) -> Format:
    return Format(
        name=name,
        family=family,
        description=description,
        converter=f"convert.formats.{module}:convert",
        sniffer=detect.claimed_by(name),
        locator=lambda root: detect.locate_in_family(root, family),
        options=options,
    )


def _directory_format(
    name: str, description: str, sniffer: Callable[[Path], Detection | None], options: tuple[type, ...]
) -> Format:
    return Format(
        name=name,
        family=name,
        description=description,
        converter=f"convert.formats.{name}:convert",
        sniffer=sniffer,
        locator=_directory,
        options=options,
    )


BUILTIN = [
    _file_format("keras_h5", "keras", "Keras .h5", "keras"),
    _file_format("keras", "keras", "Keras .keras", "keras"),
    _directory_format(
        "savedmodel", "TensorFlow SavedModel directory", detect.saved_model_dir, (GraphOptions, SignatureOptions)
    ),
    _file_format("graphdef", "graphdef", "frozen GraphDef .pb", "graphdef", (GraphOptions,)),
    _directory_format("checkpoint", "TF1 checkpoint directory", detect.checkpoint_dir, (GraphOptions,)),
    _file_format("torchscript", "torch", "TorchScript archive", "torchscript"),
    _file_format("torch_pickle", "torch", "torch.save pickle", "torch_pickle"),
    _file_format("sklearn", "sklearn", "scikit-learn pickle/joblib", "sklearn", (TabularOptions,)),
    _file_format("onnx", "onnx", "ONNX", "onnx"),
    _file_format("pmml", "pmml", "PMML", "pmml", (TabularOptions,)),
]

for _fmt in BUILTIN:
    register(_fmt)
