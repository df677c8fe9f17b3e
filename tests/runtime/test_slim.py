"""The serving environment and process hold no training framework (nor the onnx package)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.server import ROOT, serve_python

FORBIDDEN_MODULES = ("tensorflow", "torch", "keras", "tf_keras", "sklearn", "onnx", "convert", "jax")
FORBIDDEN_LIBRARIES = ("libtensorflow", "libtorch", "libjvm")


def test_serve_venv_has_no_training_framework():
    site = ROOT / ".venv" / "serve" / "lib"
    if not site.exists():
        pytest.skip(".venv/serve is not built (make install-serve)")
    installed = {p.name.lower().split("-")[0] for p in site.glob("python3*/site-packages/*")}
    for name in ("tensorflow", "tensorflow_cpu", "torch", "keras", "tf_keras", "onnx", "sklearn", "scikit_learn"):
        assert name not in installed, f".venv/serve contains {name}"


def test_importing_the_runtime_pulls_in_nothing_heavy():
    code = (
        "import sys, runtime, runtime.app, runtime.__main__, runtime.engines.onnx, runtime.codecs.image;"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([serve_python(), "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = set(out.strip().split(","))
    assert "onnxruntime" in loaded and "aiohttp" in loaded
    assert not loaded & set(FORBIDDEN_MODULES), loaded & set(FORBIDDEN_MODULES)
    assert "pypmml" not in loaded and "jpype" not in loaded  # the PMML engine loads only for PMML models


def test_running_server_maps_no_framework_library(server):
    assert requests.post(f"{server.url}/predict?model=mlp", json=[[1, 2, 3, 4]], timeout=10).status_code == 200
    maps = Path(f"/proc/{server.process.pid}/maps")
    if not maps.exists():
        pytest.skip("no /proc on this platform")
    text = maps.read_text()
    assert "onnxruntime" in text
    for library in FORBIDDEN_LIBRARIES:
        assert library not in text, f"the server mapped {library}"
