"""TorchScript archives (``torch.jit.save``) to ONNX.

Only the TorchScript-based exporter accepts a ScriptModule (the dynamo exporter needs the eager
Python class, which an archive does not carry), so it is the one used here. Loading an archive
runs no pickled Python code: its code is TorchScript, interpreted by torch itself.
"""

from __future__ import annotations

from pathlib import Path

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.formats.torch_common import example_inputs, export_module, first_line, model_file


def load_torchscript(path: Path):
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ConversionError(
            f"{path}: not a loadable TorchScript archive (torch.jit.save): {first_line(exc)}; "
            f"a model written by torch.save(model) converts with --format torch_pickle"
        ) from exc


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    path = model_file(source, "TorchScript")
    examples = example_inputs(options, path, "TorchScript")
    module = load_torchscript(path)
    return export_module(
        module, examples, options, path, workdir, source_format="torchscript", exporters=("torchscript",)
    )
