"""Cold start: the converter writes onnxruntime's offline-optimised model; the runtime loads it with graph
optimisation off when its onnxruntime version and CPU match, and the plain model otherwise."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bundle.manifest import OPTIMIZED_FILE, cpu_features, read_manifest, sha256_file
from convert.pipeline import convert_model
from runtime.engines import EngineOptions, load_engine
from tests.runtime import models


def _convert(tmp_path: Path) -> Path:
    source = tmp_path / "cnn.onnx"
    source.write_bytes(models.cnn().SerializeToString())
    convert_model(source, tmp_path / "repo", "cnn")
    return tmp_path / "repo" / "cnn" / "1"


def _answer(version_dir: Path, options: EngineOptions | None = None) -> tuple[str, np.ndarray]:
    engine = load_engine("onnx", version_dir, read_manifest(version_dir), options or EngineOptions())
    x = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    return Path(engine.session._model_path).name, engine.predict(engine.validate({"image": x}))["probs"]


def test_the_optimised_model_is_written_and_served(tmp_path: Path) -> None:
    version_dir = _convert(tmp_path)
    record = read_manifest(version_dir).optimized
    assert record["file"] == OPTIMIZED_FILE and record["onnxruntime"] == ort.__version__
    assert record["cpu_features"] == cpu_features() and record["level"] == "all"
    assert record["sha256"] == sha256_file(version_dir / OPTIMIZED_FILE)
    used, fast = _answer(version_dir)
    assert used == OPTIMIZED_FILE
    plain_used, plain = _answer(version_dir, EngineOptions(graph_optimization="extended"))
    assert plain_used == "model.onnx"  # a non-default optimisation level asks for the plain model
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)


def test_another_onnxruntime_or_a_changed_file_falls_back(tmp_path: Path, caplog) -> None:
    version_dir = _convert(tmp_path)
    _, expected = _answer(version_dir)
    manifest_path = version_dir / "modelport.json"
    data = json.loads(manifest_path.read_text())
    data["optimized"]["onnxruntime"] = "0.0.1"
    manifest_path.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="runtime.engines.onnx"):
        used, got = _answer(version_dir)
    assert used == "model.onnx" and "optimising at load" in caplog.text
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    data["optimized"]["onnxruntime"] = ort.__version__
    manifest_path.write_text(json.dumps(data))
    (version_dir / OPTIMIZED_FILE).write_bytes(b"tampered")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="runtime.engines.onnx"):
        used, got = _answer(version_dir)
    assert used == "model.onnx" and "missing or changed" in caplog.text
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
