"""A corrupt or missing model file at start: the documented behaviour.

Default: the server refuses to start, exit status 1, one log line naming the file and the reason.
With ``--allow-partial``: it starts, serves the good models, and the broken one is listed but not
ready (model ready and infer answer 503 with the load error).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from bundle.manifest import Manifest, TensorSpec
from tests.reliability import models
from tests.support.server import run_server


def corrupt(repo: Path) -> Path:
    path = models.write_mlp(repo, "broken")
    path.write_bytes(b"this is not an ONNX protobuf \x00\xff" * 10)
    return path


def truncated(repo: Path) -> Path:
    path = models.write_mlp(repo, "broken")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def missing(repo: Path) -> Path:
    """A version directory with its manifest but no model file (an interrupted copy)."""
    version_dir = repo / "broken" / "1"
    version_dir.mkdir(parents=True)
    Manifest(
        name="broken",
        format="onnx",
        inputs=[TensorSpec("x", "FP32", [-1, 4])],
        outputs=[TensorSpec("y", "FP32", [-1, 3])],
    ).write(version_dir)
    return version_dir / "model.onnx"


def empty(repo: Path) -> Path:
    """A version directory with nothing in it."""
    version_dir = repo / "broken" / "1"
    version_dir.mkdir(parents=True)
    return version_dir


def tampered(repo: Path) -> Path:
    """A model file that is not the one its manifest's sha256 describes (replaced after conversion)."""
    path = models.write_mlp(repo, "broken")
    Manifest(
        name="broken",
        format="onnx",
        inputs=[TensorSpec("x", "FP32", [-1, 4])],
        outputs=[TensorSpec("y", "FP32", [-1, 3])],
        sha256="0" * 64,
    ).write(path.parent)
    return path


BREAKAGES = [corrupt, truncated, missing, empty, tampered]


@pytest.mark.parametrize("break_model", BREAKAGES, ids=lambda f: f.__name__)
def test_a_broken_model_stops_the_start_naming_the_file(tmp_path: Path, break_model) -> None:
    models.write_mlp(tmp_path)
    named = break_model(tmp_path)
    with run_server(tmp_path, wait_ready=False, log_dir=tmp_path) as server:
        code = server.process.wait(timeout=120)
        log = server.log()
    print(f"\n{break_model.__name__}: exit {code}; {[line for line in log.splitlines() if 'ERROR' in line][-1]}")
    assert code == 1
    assert "cannot start" in log
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert any(str(named) in line or str(named.parent) in line for line in errors), log
    assert "Traceback" not in log


@pytest.mark.parametrize("break_model", BREAKAGES, ids=lambda f: f.__name__)
def test_allow_partial_serves_the_good_model_and_marks_the_broken_one_not_ready(tmp_path: Path, break_model) -> None:
    models.write_mlp(tmp_path)
    named = break_model(tmp_path)
    with run_server(tmp_path, "--allow-partial", log_dir=tmp_path) as server:
        ready = requests.get(f"{server.url}/v2/models/broken/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert str(named.parent) in ready.json()["error"]
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        response = requests.post(f"{server.url}/v2/models/broken/infer", json=body, timeout=10)
        assert response.status_code == 503
        assert "not ready" in response.json()["error"]
        response = requests.post(f"{server.url}/v2/models/mlp/infer", json=body, timeout=10)
        assert response.status_code == 200
        assert requests.get(f"{server.url}/v2/models/mlp/ready", timeout=10).status_code == 200
        listed = requests.get(f"{server.url}/api/models", timeout=10)
        assert listed.status_code == 200
        assert "broken" in listed.text
        assert "Traceback" not in server.log()
