"""Tiny ONNX models for the runtime tests, built with onnx.helper (fixed seed, random weights).

- ``mlp``        x FP32 [-1, 4] -> probs FP32 [-1, 3]; no manifest (derived from the graph).
- ``cnn``        image FP32 [-1, 8, 8, 3] NHWC -> probs [-1, 4]; manifest with image preprocessing
                 (mean/std), labels and sha256.
- ``cnn_nchw``   image FP32 [-1, 1, 6, 6] NCHW greyscale -> probs [-1, 3]; manifest, no labels.
- ``two_io``     a, b FP32 [-1, 3] -> sum, prod.
- ``types``      INT64, INT32, BOOL, FP16, UINT8 and BYTES (string) inputs through Identity/Add/Not/Mul.
- ``fixed``      x FP32 [2, 2] -> y = 2x: no batch axis.
- ``tabular``    age FP32 [-1, 1], city BYTES [-1] -> score FP32 [-1, 1] = 2 age, city_out BYTES [-1].
- ``offset``     x FP32 [-1, 4] -> y = x + c (c given): tells which of several reloaded models answered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from bundle.manifest import ImagePreprocessing, Manifest, TensorSpec, sha256_file

RNG = np.random.default_rng(1234)
CNN_LABELS = ["cat", "dog", "bird", "fish"]
CNN_IMAGE = ImagePreprocessing(
    input="image",
    layout="NHWC",
    height=8,
    width=8,
    color_mode="RGB",
    mean=[0.485, 0.456, 0.406],
    std=[0.229, 0.224, 0.225],
)
NCHW_IMAGE = ImagePreprocessing(input="image", layout="NCHW", height=6, width=6, color_mode="L", mean=[0.5], std=[0.25])


def _weights(name: str, *shape: int, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(dtype), name)


def _model(nodes, name, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _io(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def mlp() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [_weights("w1", 4, 16), _weights("b1", 16), _weights("w2", 16, 3), _weights("b2", 3)]
    return _model(nodes, "mlp", [_io("x", T.FLOAT, ["N", 4])], [_io("probs", T.FLOAT, ["N", 3])], inits)


def _convnet(name: str, in_shape: list, channels: int, classes: int, nhwc: bool) -> onnx.ModelProto:
    nodes = []
    src = "image"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        src = "nchw"
    nodes += [
        helper.make_node("Conv", [src, "k", "kb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [_weights("k", 5, channels, 3, 3), _weights("kb", 5), _weights("w", 5, classes), _weights("b", classes)]
    return _model(nodes, name, [_io("image", T.FLOAT, in_shape)], [_io("probs", T.FLOAT, ["N", classes])], inits)


def cnn() -> onnx.ModelProto:
    return _convnet("cnn", ["N", 8, 8, 3], 3, 4, nhwc=True)


def cnn_nchw() -> onnx.ModelProto:
    return _convnet("cnn_nchw", ["N", 1, 6, 6], 1, 3, nhwc=False)


def two_io() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])]
    ins = [_io("a", T.FLOAT, ["N", 3]), _io("b", T.FLOAT, ["N", 3])]
    outs = [_io("sum", T.FLOAT, ["N", 3]), _io("prod", T.FLOAT, ["N", 3])]
    return _model(nodes, "two_io", ins, outs)


def types() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Add", ["i64", "one64"], ["i64_out"]),
        helper.make_node("Add", ["i32", "one32"], ["i32_out"]),
        helper.make_node("Not", ["flag"], ["flag_out"]),
        helper.make_node("Mul", ["half", "half"], ["half_out"]),
        helper.make_node("Identity", ["u8"], ["u8_out"]),
        helper.make_node("Identity", ["text"], ["text_out"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one64"),
        numpy_helper.from_array(np.array(1, dtype=np.int32), "one32"),
    ]
    names = [
        ("i64", T.INT64),
        ("i32", T.INT32),
        ("flag", T.BOOL),
        ("half", T.FLOAT16),
        ("u8", T.UINT8),
        ("text", T.STRING),
    ]
    ins = [_io(n, t, ["N", 2]) for n, t in names]
    outs = [_io(n + "_out", t, ["N", 2]) for n, t in names]
    return _model(nodes, "types", ins, outs, inits)


def fixed() -> onnx.ModelProto:
    nodes = [helper.make_node("Mul", ["x", "two"], ["y"])]
    inits = [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    return _model(nodes, "fixed", [_io("x", T.FLOAT, [2, 2])], [_io("y", T.FLOAT, [2, 2])], inits)


def offset(value: float) -> onnx.ModelProto:
    """x FP32 [-1, 4] -> y = x + ``value``: which model answered is visible in the answer (reload tests)."""
    nodes = [helper.make_node("Add", ["x", "c"], ["y"])]
    inits = [numpy_helper.from_array(np.array(value, dtype=np.float32), "c")]
    return _model(nodes, "offset", [_io("x", T.FLOAT, ["N", 4])], [_io("y", T.FLOAT, ["N", 4])], inits)


def tabular() -> onnx.ModelProto:
    nodes = [helper.make_node("Mul", ["age", "two"], ["score"]), helper.make_node("Identity", ["city"], ["city_out"])]
    inits = [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    ins = [_io("age", T.FLOAT, ["N", 1]), _io("city", T.STRING, ["N"])]
    outs = [_io("score", T.FLOAT, ["N", 1]), _io("city_out", T.STRING, ["N"])]
    return _model(nodes, "tabular", ins, outs, inits)


def save(repository: Path, name: str, model: onnx.ModelProto, version: str = "1") -> Path:
    version_dir = repository / name / version
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.onnx"
    onnx.save(model, str(path))
    return path


def _spec(name: str, datatype: str, shape: list[int]) -> TensorSpec:
    return TensorSpec(name=name, datatype=datatype, shape=shape)


def write_manifest(path: Path, manifest: Manifest) -> None:
    manifest.sha256 = sha256_file(path)
    manifest.write(path.parent)


def build_repository(repository: Path) -> Path:
    """Every model above; ``cnn`` and ``cnn_nchw`` with manifests, ``mlp`` also as version 2."""
    save(repository, "mlp", mlp())
    save(repository, "mlp", mlp(), version="2")
    path = save(repository, "cnn", cnn())
    write_manifest(
        path,
        Manifest(
            name="cnn",
            format="onnx",
            inputs=[_spec("image", "FP32", [-1, 8, 8, 3])],
            outputs=[_spec("probs", "FP32", [-1, 4])],
            max_batch_size=8,
            image=CNN_IMAGE,
            labels=CNN_LABELS,
            label_output="probs",
        ),
    )
    path = save(repository, "cnn_nchw", cnn_nchw())
    write_manifest(
        path,
        Manifest(
            name="cnn_nchw",
            format="onnx",
            inputs=[_spec("image", "FP32", [-1, 1, 6, 6])],
            outputs=[_spec("probs", "FP32", [-1, 3])],
            max_batch_size=8,
            image=NCHW_IMAGE,
        ),
    )
    save(repository, "two_io", two_io())
    save(repository, "types", types())
    save(repository, "fixed", fixed())
    save(repository, "tabular", tabular())
    return repository


def slow(iterations: int, size: int = 256) -> onnx.ModelProto:
    """x FP32 [-1, 4] -> y = x + 0 * (``iterations`` chained size x size MatMul+Tanh): slow on purpose."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["m_in", "w"], ["mm"]),
            helper.make_node("Tanh", ["mm"], ["m_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [_io("i", T.INT64, []), _io("cond_in", T.BOOL, []), _io("m_in", T.FLOAT, [size, size])],
        [_io("cond_out", T.BOOL, []), _io("m_out", T.FLOAT, [size, size])],
    )
    inits = [
        numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.array([size, size], dtype=np.int64), "square"),
        numpy_helper.from_array((RNG.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["seed"], keepdims=0),
        helper.make_node("Expand", ["seed", "square"], ["m0"]),
        helper.make_node("Loop", ["trips", "cond", "m0"], ["m_final"], body=body),
        helper.make_node("ReduceSum", ["m_final"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["y"]),
    ]
    return _model(nodes, "slow", [_io("x", T.FLOAT, ["N", 4])], [_io("y", T.FLOAT, ["N", 4])], inits)
