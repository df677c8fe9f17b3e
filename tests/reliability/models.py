"""Tiny ONNX models for the reliability tests, built with onnx.helper (random weights, fixed seed).

- ``mlp``: x FP32 [-1, 4] -> y FP32 [-1, 3], dynamic batch; what the load test and the fuzzer drive.
- ``slow``: x FP32 [-1, 4] -> y = x + 0 * (a loop of big MatMuls); slow on purpose, for backpressure,
  deadlines and shutdown with requests in flight. The loop's trip count sets how slow.
- ``vision``: image FP32 [-1, 3, 8, 8] NCHW -> probs FP32 [-1, 3], with a manifest image section and
  labels, so the image endpoints and the pixel limit have something to hit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bundle.manifest import ImagePreprocessing, Manifest, TensorSpec
from tests.runtime.models import slow as slow_model

OPSET = 17
RNG = np.random.default_rng(7)


def _save(model: onnx.ModelProto, repository: Path, name: str, manifest: Manifest | None = None) -> Path:
    onnx.checker.check_model(model)
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.onnx"
    onnx.save(model, str(path))
    if manifest is not None:
        manifest.write(version_dir)
    return path


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def mlp_graph() -> onnx.ModelProto:
    w1 = numpy_helper.from_array(RNG.standard_normal((4, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(RNG.standard_normal((8, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w1, b1, w2],
    )
    return _model(graph)


def slow_graph(iterations: int, size: int = 384) -> onnx.ModelProto:
    """y = x + 0 * sum(tanh(M @ W) repeated ``iterations`` times): the runtime tests' slow model."""
    return slow_model(iterations, size)


def vision_graph() -> onnx.ModelProto:
    w = numpy_helper.from_array(RNG.standard_normal((3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "vision",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    return _model(graph)


def write_mlp(repository: Path, name: str = "mlp") -> Path:
    return _save(mlp_graph(), repository, name)


def write_slow(repository: Path, iterations: int, name: str = "slow") -> Path:
    return _save(slow_graph(iterations), repository, name)


def write_vision(repository: Path, name: str = "vision") -> Path:
    manifest = Manifest(
        name=name,
        format="onnx",
        inputs=[TensorSpec("image", "FP32", [-1, 3, 8, 8])],
        outputs=[TensorSpec("probs", "FP32", [-1, 3])],
        max_batch_size=8,
        image=ImagePreprocessing(input="image", layout="NCHW", height=8, width=8),
        labels=["cat", "dog", "owl"],
        label_output="probs",
    )
    return _save(vision_graph(), repository, name, manifest)


def calibrated_slow(repository: Path, seconds: float, name: str = "slow") -> tuple[Path, float]:
    """The slow model sized so one inference takes about ``seconds`` on this machine with one thread.

    Returns the file and the measured seconds per inference (the tests' timings derive from it).
    """
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    x = {"x": np.ones((1, 4), np.float32)}

    def timed(iterations: int) -> float:
        session = ort.InferenceSession(slow_graph(iterations).SerializeToString(), options)
        session.run(None, x)
        started = time.perf_counter()
        session.run(None, x)
        return time.perf_counter() - started

    per_iteration = timed(40) / 40
    iterations = max(10, round(seconds / per_iteration))
    return write_slow(repository, iterations, name), timed(iterations)
