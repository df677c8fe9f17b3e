"""A format plug-in installed through an entry point is detected and converted like a built-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from convert import cli, detect
from convert.formats import Format, formats, load_plugins, register, unregister
from convert.pipeline import convert_model

WEIGHTS = [[1.0, -2.0], [0.5, 0.25], [3.0, 0.0]]
BIAS = [0.1, -0.2]


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plug-in's distribution metadata on sys.path, as ``pip install`` would leave it."""
    site = tmp_path / "site"
    dist = site / "modelport_linear-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: modelport-linear\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[modelport.formats]\nlinear_json = tests.convert.plugin.linear_format:FORMAT\n"
    )
    monkeypatch.syspath_prepend(str(site))
    assert load_plugins() == ["linear_json"]
    yield
    unregister("linear_json")


def model_file(directory: Path) -> Path:
    path = directory / "pricing.json"
    path.write_text(json.dumps({"modelport_linear": {"weights": WEIGHTS, "bias": BIAS}}))
    return path


def test_plugin_is_detected_and_converted(installed: None, tmp_path: Path) -> None:
    path = model_file(tmp_path)
    assert [f.name for f in formats()][-1] == "linear_json"  # after the built-ins
    assert detect.detect(path).format == "linear_json"
    assert detect.detect(tmp_path).path == path  # found inside a directory too
    assert "linear model JSON (linear_json)" in detect.supported()

    manifest = convert_model(path, tmp_path / "models", "pricing")  # in the child: it loads the plug-in too
    assert manifest.source.format == "linear_json"
    assert manifest.parity.verified and manifest.parity.max_abs_error < 1e-6
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "models" / "pricing" / "1" / "model.onnx"))
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], x @ np.array(WEIGHTS) + BIAS, rtol=1e-6)


def test_plugin_flags_reach_its_converter_and_no_other(
    installed: None,
    tmp_path: Path,
    onnx_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The plug-in's own --linear-scale is on the command line, reaches its converter, and is
    refused for a model of another format."""
    monkeypatch.setenv("MODELPORT_CONVERT_INPROCESS", "1")
    path = model_file(tmp_path)
    assert cli.main([str(path), "--repository", str(tmp_path / "models"), "--name", "p", "--linear-scale", "2"]) == 0
    session = ort.InferenceSession(str(tmp_path / "models" / "p" / "1" / "model.onnx"))
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], x @ (2 * np.array(WEIGHTS)) + BIAS, rtol=1e-6)

    code = cli.main([str(onnx_file), "--repository", str(tmp_path / "models"), "--name", "o", "--linear-scale", "2"])
    assert code == 64
    assert "--linear-scale does not apply to onnx models" in capsys.readouterr().err


def test_register_refuses_a_silent_overwrite() -> None:
    onnx_format = next(f for f in formats() if f.name == "onnx")
    impostor = Format(name="onnx", family="onnx", description="another ONNX", converter="x:y")
    with pytest.raises(ValueError, match=r"'onnx' is already registered.*overwrite=True"):
        register(impostor)
    register(onnx_format)  # the same object again is no change
    with pytest.raises(TypeError, match=r"not a SourceFormat: it lacks name, family, description, sniff"):
        register(object())
