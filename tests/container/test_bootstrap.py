"""The serve image's start-up (runtime/bootstrap.py): HOSTS compatibility and fetching a model from
the old model repository when none was baked in, then serving it with the real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
from onnx import TensorProto, helper

from runtime import bootstrap
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env
from tests.support.server import run_server


def test_hosts_entries_are_appended_once(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    value = "10.0.0.5<->repo.internal, 10.0.0.6<->db.internal"
    assert bootstrap.apply_hosts(value, hosts) == 2
    assert bootstrap.apply_hosts(value, hosts) == 0  # a restart does not duplicate them
    assert hosts.read_text().splitlines() == [
        "127.0.0.1\tlocalhost",
        "10.0.0.5\trepo.internal",
        "10.0.0.6\tdb.internal",
    ]


def test_malformed_hosts_entry_is_named() -> None:
    with pytest.raises(bootstrap.BootstrapError, match=r"'10\.0\.0\.5 repo'"):
        bootstrap.parse_hosts("10.0.0.5 repo")


def test_unwritable_hosts_file_logs_the_add_host_flags(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing_dir = tmp_path / "no-such-dir" / "hosts"
    assert bootstrap.apply_hosts("10.1.2.3<->legacy", missing_dir) == 0
    assert "--add-host legacy:10.1.2.3" in caplog.text


def _tiny_onnx(path: Path) -> Path:
    node = helper.make_node("Mul", ["x", "two"], ["y"])
    graph = helper.make_graph(
        [node],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_fetch_at_start_from_the_model_repository_then_serve(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "double.onnx")
    archive = pack_old_platform_zip(model, tmp_path / "model.zip")
    repository = tmp_path / "models"
    with ModelRepositoryServer() as repo:
        repo.add("77", archive)
        with repository_env(repo, model_id="77"):
            env = {**os.environ, "MODEL_REPOSITORY": str(repository), "MODEL_NAME": "double"}
            bootstrap.prepare(env)
            bootstrap.prepare(env)  # a restart with the model in place fetches nothing more
        assert repo.requests == 1
    assert (repository / "double" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    assert not [p for p in repository.iterdir() if p.name.startswith(".")], "staging left behind"

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    with run_server(repository, log_dir=tmp_path) as server:
        body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x.ravel().tolist()}]}
        response = requests.post(f"{server.url}/v2/models/double/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert np.array_equal(np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32), expected.ravel())


def test_fetch_of_a_non_servable_format_fails_clearly(tmp_path: Path) -> None:
    weights = tmp_path / "model.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    archive = pack_old_platform_zip(weights, tmp_path / "model.zip")
    with ModelRepositoryServer() as repo:
        repo.add("5", archive)
        with repository_env(repo, model_id="5"):
            env = {**os.environ, "MODEL_REPOSITORY": str(tmp_path / "models")}
            with pytest.raises(bootstrap.BootstrapError, match=r"\.onnx or \.pmml.*model\.h5"):
                bootstrap.prepare(env)
    assert not (tmp_path / "models" / "5").exists()


def test_empty_repository_with_nothing_to_fetch_fails_clearly(tmp_path: Path) -> None:
    env = {"MODEL_REPOSITORY": str(tmp_path / "models"), "PATH": os.environ.get("PATH", "")}
    with pytest.raises(bootstrap.BootstrapError, match=r"no model in .*models.*XQUERY_ADDR \+ MODEL_ID"):
        bootstrap.prepare(env)


def test_a_named_stored_model_is_left_to_the_server(tmp_path: Path) -> None:
    """``--model-name``: /mnt/models holds one model in any shape; no fetch, no "empty repository" exit."""
    (tmp_path / "churn.onnx").write_bytes(b"\x08\x07")
    bootstrap.prepare({"MODEL_REPOSITORY": str(tmp_path), "MODELPORT_MODEL_NAME": "churn"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["churn.onnx"]
    assert bootstrap.flag_from_args(["--model-name", "churn"], "--model-name") == "churn"
    assert bootstrap.flag_from_args(["--model-name=churn"], "--model-name") == "churn"


def test_repository_flag_wins_over_the_environment() -> None:
    assert bootstrap.repository_from_args(["--port", "5001", "--repository", "/srv/models"]) == "/srv/models"
    assert bootstrap.repository_from_args(["--repository=/srv/m"]) == "/srv/m"
    assert bootstrap.repository_from_args(["--port", "5001"]) is None


def test_entrypoint_exits_2_naming_the_empty_repository(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("XQUERY_ADDR", "MODEL_ID", "MODEL_URL")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, "-m", "runtime.bootstrap", "--repository", str(tmp_path / "empty"), "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"no model in {tmp_path / 'empty'}" in result.stderr
