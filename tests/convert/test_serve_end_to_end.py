"""Model-repository zip -> convert -> the real server -> a V2 prediction equal to onnxruntime's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from convert.pipeline import convert_model
from tests.convert.conftest import FAST
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env
from tests.support.server import ROOT, run_server

pytestmark = pytest.mark.skipif(
    not (ROOT / "runtime" / "__main__.py").exists(),
    reason="the runtime server (runtime/__main__.py) is not in the tree",
)


def test_onnx_zip_converted_and_served(tmp_path: Path, onnx_file: Path) -> None:
    import onnxruntime

    zip_path = pack_old_platform_zip(onnx_file, tmp_path / "export.zip")
    repository = tmp_path / "models"
    with ModelRepositoryServer() as repo:
        repo.add("99", zip_path)
        with repository_env(repo, model_id="99"):
            convert_model(None, repository, "tiny", policy=FAST)
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    expected = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}]}
    with run_server(repository, log_dir=tmp_path) as server:
        metadata = requests.get(f"{server.url}/v2/models/tiny", timeout=10).json()
        response = requests.post(f"{server.url}/v2/models/tiny/infer", json=body, timeout=30)
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [("x", "FP32", [-1, 4])]
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [3, 3])
    np.testing.assert_allclose(
        np.asarray(output["data"], dtype=np.float32).reshape(3, 3), expected, rtol=1e-6, atol=1e-6
    )
