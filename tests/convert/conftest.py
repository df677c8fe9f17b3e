from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bundle.fetch import DownloadPolicy

FAST = DownloadPolicy(timeout=2.0, retries=2, backoff=0.01, max_backoff=0.02)


def make_onnx(path: Path, seed: int = 0) -> Path:
    """y = relu(x @ W + b): x [N, 4] -> y [N, 3], dynamic batch; random weights from ``seed``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelport-tests")
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    return make_onnx(tmp_path / "tiny.onnx")


def listing(directory: Path) -> list[str]:
    """Every path under ``directory`` (hidden ones included): what "nothing left behind" checks."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def make_image_onnx(path: Path, shape: list[int | str]) -> Path:
    """An image-shaped input -> per-sample mean over every axis but the batch: y [N, 1]."""
    import onnx
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes", TensorProto.INT64, [len(shape) - 1], list(range(1, len(shape))))
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image", "axes"], ["y"], keepdims=0)],
        "image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        [axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
