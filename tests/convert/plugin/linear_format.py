"""A third-party format plug-in, as docs/convert.md ("Writing a format plug-in") describes it.

A "linear model" JSON file (``{"modelport_linear": {"weights": [[...]], "bias": [...]}}``) becomes
an ONNX ``MatMul`` + ``Add``; the reference is numpy on the same numbers. The test installs it
through a ``modelport.formats`` entry point only: nothing in modelport names it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bundle.manifest import TensorSpec
from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, Detection


@dataclass
class LinearOptions:
    """This format's own option: the weights are multiplied by ``scale`` (a unit change)."""

    scale: float = field(default=1.0, metadata={"flag": "--linear-scale"})


@dataclass(frozen=True)
class LinearFormat:
    name: str = "linear_json"
    family: str = "linear_json"
    description: str = "linear model JSON"
    options: tuple[type, ...] = (LinearOptions,)

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--linear-scale", type=float, default=1.0, help="multiply the weights (unit change)")

    def options_from_args(self, args: argparse.Namespace) -> LinearOptions:
        return LinearOptions(scale=args.linear_scale)

    def sniff(self, path: Path) -> Detection | None:
        if not path.is_file() or path.suffix != ".json" or path.stat().st_size > 1 << 20:
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            return None
        return Detection(self.name, path) if isinstance(data, dict) and "modelport_linear" in data else None

    def locate(self, root: Path) -> Path:
        found = sorted(root.glob("*.json")) if root.is_dir() else [root]
        return found[0] if found else root

    def convert(self, source: Path, options: ConvertOptions, workdir: Path) -> Converted:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        spec = json.loads(Path(source).read_text())["modelport_linear"]
        weights = np.asarray(spec["weights"], dtype=np.float32) * np.float32(options.of(LinearOptions).scale)
        bias = np.asarray(spec["bias"], dtype=np.float32)
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise ConversionError(f"{source}: weights must be [in, out] and bias [out]")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
            "linear",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights.shape[0]])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights.shape[1]])],
            [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", options.opset)])
        path = Path(workdir) / "model.onnx"
        onnx.save(model, str(path))
        return Converted(
            model_path=path,
            format="onnx",
            inputs=[TensorSpec("x", "FP32", [-1, weights.shape[0]])],
            outputs=[TensorSpec("y", "FP32", [-1, weights.shape[1]])],
            source_format=self.name,
            converters={"onnx": onnx.__version__},
            opset=options.opset,
            max_batch_size=-1,
            reference=lambda inputs: {"y": inputs["x"] @ weights + bias},
        )


FORMAT = LinearFormat()
