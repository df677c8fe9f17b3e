"""``--quantize dynamic|static``: int8 models served only when the accuracy gate passes (convert/quantize.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bundle.manifest import read_manifest
from convert.cli import main as cli_main
from convert.errors import VerificationError
from convert.formats import ConvertOptions
from convert.pipeline import convert_model
from runtime.engines import EngineOptions, load_engine
from tests.convert.conftest import listing


def classifier(path: Path, *, near_ties: bool = False, seed: int = 0) -> Path:
    """x [N, 16] -> relu(x W1 + b1) W2 -> softmax: 10 class scores. ``near_ties``: every class's weights
    differ from the others by 1e-4, so the float model's top-1 class rests on differences int8 cannot keep."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 64)).astype(np.float32)
    if near_ties:
        w2 = (rng.standard_normal((64, 1)) + 1e-4 * rng.standard_normal((64, 10))).astype(np.float32)
    else:
        w2 = rng.standard_normal((64, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h"]),
            helper.make_node("MatMul", ["h", "W2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b1"),
            numpy_helper.from_array(w2, "W2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def regressor(path: Path) -> Path:
    """x [N, 16] -> x W: one value per row (a regression)."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "regressor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(rng.standard_normal((16, 1)).astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _quantized_types(path: Path) -> tuple[set[int], int]:
    """(the element types of the activations' quantization, the largest |int8 weight|). An activation's
    QuantizeLinear quantizes a computed tensor; a weight is an int8 initializer the graph dequantizes."""
    model = onnx.load(str(path))
    initializers = {t.name: t for t in model.graph.initializer}
    activations = {
        initializers[node.input[2]].data_type
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers and len(node.input) > 2
    }
    if any(node.op_type == "DynamicQuantizeLinear" for node in model.graph.node):
        activations.add(TensorProto.UINT8)  # its output is uint8 by definition
    weights = [numpy_helper.to_array(t) for t in initializers.values() if t.data_type == TensorProto.INT8]
    return activations, max(int(np.abs(w.astype(np.int16)).max()) for w in weights if w.size > 1)


def _serve(version_dir: Path, x: np.ndarray) -> np.ndarray:
    engine = load_engine("onnx", version_dir, read_manifest(version_dir), EngineOptions())
    return engine.predict(engine.validate({"x": x}))["probs"]


def test_dynamic_quantization_passes_the_gate_and_serves(tmp_path: Path) -> None:
    source = classifier(tmp_path / "c.onnx")
    manifest = convert_model(
        source, tmp_path / "repo", "c", options=ConvertOptions(quantize="dynamic"), subprocess=False
    )
    version_dir = tmp_path / "repo" / "c" / "1"
    record = manifest.parity.quantization
    assert record["mode"] == "dynamic" and record["samples"] == 200
    assert record["top1_agreement"] >= 0.99
    assert 0 < record["max_rel_deviation"] < 0.2
    assert read_manifest(version_dir).parity.quantization == record  # in modelport.json
    assert "MatMulInteger" in _ops(version_dir / "model.onnx")  # the served file is the int8 one
    assert _quantized_types(version_dir / "model.onnx") == ({TensorProto.UINT8}, 127)  # U8S8, full-range weights
    x = np.random.default_rng(5).standard_normal((8, 16)).astype(np.float32)
    float_probs = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    served = _serve(version_dir, x)
    assert (served.argmax(1) == float_probs.argmax(1)).mean() >= 0.75
    assert not np.array_equal(served, float_probs)


def test_static_qdq_calibrated_on_a_csv(tmp_path: Path) -> None:
    source = classifier(tmp_path / "c.onnx")
    rows = np.random.default_rng(2).standard_normal((40, 16))
    calibration = tmp_path / "calibration.csv"
    calibration.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in rows))
    base = [str(source), "--repository", str(tmp_path / "repo"), "--name", "c", "--quantize", "static"]
    # --min-agreement 0.95: int8 activations flip ~1.5% of this random model's near ties
    code = cli_main([*base, "--calibration", str(calibration), "--min-agreement", "0.95"])
    assert code == 0
    version_dir = tmp_path / "repo" / "c" / "1"
    record = read_manifest(version_dir).parity.quantization
    assert record["mode"] == "static" and record["format"] == "QDQ" and record["types"].startswith("U8S8")
    assert record["calibration"] == "calibration.csv (CSV rows)"
    assert record["top1_agreement"] >= 0.95 and record["min_agreement"] == 0.95
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(version_dir / "model.onnx")
    # uint8 activations (x86 runs U8S8 directly; S8S8 was no faster than float), weights in a 7-bit range
    assert _quantized_types(version_dir / "model.onnx") == ({TensorProto.UINT8}, 64)
    assert _serve(version_dir, rows[:4].astype(np.float32)).shape == (4, 10)


def test_a_model_that_fails_the_gate_is_refused(tmp_path: Path) -> None:
    source = classifier(tmp_path / "ties.onnx", near_ties=True)
    repository = tmp_path / "repo"
    with pytest.raises(VerificationError) as info:
        convert_model(source, repository, "t", options=ConvertOptions(quantize="dynamic"), subprocess=False)
    message = str(info.value)
    assert "output 'probs': top-1 agreement with the float model" in message and "--min-agreement 99.0%" in message
    assert listing(repository) == []  # refused like a parity failure: nothing written
    # the same model converts when the gate is lowered on purpose, and records what it measured
    manifest = convert_model(
        source, repository, "t", options=ConvertOptions(quantize="dynamic", min_agreement=0), subprocess=False
    )
    assert manifest.parity.quantization["top1_agreement"] < 0.99


def test_regressors_are_gated_on_relative_deviation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = regressor(tmp_path / "r.onnx")
    args = [str(source), "--repository", str(tmp_path / "repo"), "--name", "r", "--quantize", "static"]
    assert cli_main([*args, "--quant-rtol", "1e-9"]) == VerificationError.exit_code
    assert "deviation from the float model" in capsys.readouterr().err
    assert cli_main(args) == 0
    record = read_manifest(tmp_path / "repo" / "r" / "1").parity.quantization
    assert record["top1_agreement"] is None and record["max_rel_deviation"] <= 0.1


def test_calibration_needs_static_and_an_existing_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = classifier(tmp_path / "c.onnx")
    base = [str(source), "--repository", str(tmp_path / "repo"), "--name", "c"]
    assert cli_main([*base, "--quantize", "dynamic", "--calibration", str(source)]) != 0
    assert "--calibration needs --quantize static" in capsys.readouterr().err
    assert cli_main([*base, "--quantize", "static", "--calibration", str(tmp_path / "missing")]) != 0
    assert "no such file or directory" in capsys.readouterr().err
