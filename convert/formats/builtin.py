"""The formats this project ships, registered like any plug-in (``convert.formats.register``).

Their converters are named by dotted path and imported only in the conversion child; their
sniffers read bytes (``convert.detect``), so detection imports no framework.
"""

from __future__ import annotations

from pathlib import Path

from convert import detect
from convert.formats import Format, register


def _directory(root: Path) -> Path:
    return root if root.is_dir() else root.parent


def _file_format(name: str, family: str, description: str, module: str) -> Format:
    return Format(
        name=name,
        family=family,
        description=description,
        converter=f"convert.formats.{module}:convert",
        sniffer=detect.claimed_by(name),
        locator=lambda root: detect.locate_in_family(root, family),
    )


BUILTIN = [
    _file_format("keras_h5", "keras", "Keras .h5", "keras"),
    _file_format("keras", "keras", "Keras .keras", "keras"),
    Format(
        name="savedmodel",
        family="savedmodel",
        description="TensorFlow SavedModel directory",
        converter="convert.formats.savedmodel:convert",
        sniffer=detect.saved_model_dir,
        locator=_directory,
    ),
    _file_format("graphdef", "graphdef", "frozen GraphDef .pb", "graphdef"),
    Format(
        name="checkpoint",
        family="checkpoint",
        description="TF1 checkpoint directory",
        converter="convert.formats.checkpoint:convert",
        sniffer=detect.checkpoint_dir,
        locator=_directory,
    ),
    _file_format("torchscript", "torch", "TorchScript archive", "torchscript"),
    _file_format("torch_pickle", "torch", "torch.save pickle", "torch_pickle"),
    _file_format("sklearn", "sklearn", "scikit-learn pickle/joblib", "sklearn"),
    _file_format("onnx", "onnx", "ONNX", "onnx"),
    _file_format("pmml", "pmml", "PMML", "pmml"),
]

for _fmt in BUILTIN:
    register(_fmt)
