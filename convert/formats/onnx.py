"""ONNX models pass through: checked by ``onnx.checker``, re-saved as one self-contained file.

There is no source framework to compare against, so verification can only prove that the file
loads and runs in the serving engine; the manifest records exactly that (``verified: false``).
"""

from __future__ import annotations

from pathlib import Path

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.toolkit import first_line, tensor_spec

MAX_PROTOBUF = 2 << 30


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    import onnx

    path = Path(source)
    if path.is_dir():
        candidates = sorted(path.rglob("*.onnx"))
        if len(candidates) != 1:
            raise ConversionError(f"{path}: expected exactly one .onnx file, found {len(candidates)}")
        path = candidates[0]
    try:
        model = onnx.load(str(path))  # also pulls in external data files beside it
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise ConversionError(f"{path}: not a valid ONNX model: {first_line(exc, with_type=True)}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [tensor_spec(v, path, dynamic_batch=False) for v in model.graph.input if v.name not in initializers]
    outputs = [tensor_spec(v, path, dynamic_batch=False) for v in model.graph.output]
    target = Path(workdir) / "model.onnx"
    try:
        if model.ByteSize() >= MAX_PROTOBUF:
            raise ConversionError(f"{path}: over 2 GiB; models with external data that large are not supported")
        onnx.save(model, str(target))
    except ValueError as exc:
        raise ConversionError(f"{path}: cannot be saved as one file: {exc}") from None
    batch_dynamic = bool(inputs) and all(t.shape and t.shape[0] == -1 for t in inputs)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return Converted(
        model_path=target,
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        source_format="onnx",
        converters={"onnx": onnx.__version__},
        opset=opsets.get("ai.onnx"),
        max_batch_size=-1 if batch_dynamic else 0,
        detail={"producer": f"{model.producer_name} {model.producer_version}".strip(), "opsets": opsets},
        notes=["ONNX pass-through: onnx.checker passed"],
    )
