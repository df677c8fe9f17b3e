"""TensorFlow-family models the old platform's way, end to end.

Each model is packed into a zip under ``model/model/``, served by the stand-in model repository on
127.0.0.1, downloaded and converted by the real pipeline (the checkpoint through the CLI in a
subprocess, the rest through ``convert_model``), then served by the real runtime (from .venv/serve)
and asked over HTTP (KServe V2). Every answer is compared with what the source framework computed
when the model was saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from bundle.manifest import Manifest, read_manifest
from convert.pipeline import convert_model
from tests.convert_tf import builders
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env
from tests.support.server import ROOT, RunningServer, run_server

ATOL = 1e-4
pytestmark = pytest.mark.slow


def checkpoint_model(directory: Path) -> builders.Saved:
    run = builders.save_checkpoints(directory / "training_run", [100, 1200, 300])
    others = {step: out for step, out in run.outputs_by_step.items() if step != 1200}
    return builders.Saved(run.directory, "checkpoint", run.inputs, run.outputs_by_step[1200], other_steps=others)


# served name -> (builder, expected source format)
CASES: dict[str, tuple[Callable[[Path], builders.Saved], str]] = {
    "keras2-h5-cnn": (lambda d: builders.save_keras(d, "cnn", "tf_keras", ".h5"), "keras_h5"),
    "keras3-h5-two-io": (lambda d: builders.save_keras(d, "two_io", "keras", ".h5"), "keras_h5"),
    "keras3-zip-two-io": (lambda d: builders.save_keras(d, "two_io", "keras", ".keras"), "keras"),
    "savedmodel": (builders.save_tf_module, "savedmodel"),
    "savedmodel-tf1": (builders.save_tf1_saved_model, "savedmodel"),
    "graphdef": (builders.save_frozen_graph, "graphdef"),
    "checkpoint": (checkpoint_model, "checkpoint"),
}
CLI_CASE = "checkpoint"


@dataclass
class Deployment:
    repository: Path
    saved: dict[str, builders.Saved]
    requests_seen: list[dict[str, str]]


def convert_with_cli(name: str, repository: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "convert", "--from-repository", "--repository", str(repository), "--name", name],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"{name} v1: checkpoint -> onnx, parity max abs" in result.stdout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    work = Path(tmp_path_factory.mktemp("tf_e2e"))
    repository = work / "models"
    saved = {}
    with ModelRepositoryServer() as model_repository:
        for number, (name, (build, _)) in enumerate(CASES.items(), start=1):
            model_dir = work / name
            model_dir.mkdir()
            saved[name] = build(model_dir)
            model_repository.add(str(number), pack_old_platform_zip(saved[name].path, work / f"{name}.zip"))
            with repository_env(model_repository, model_id=str(number), model_version="3") as env:
                if name == CLI_CASE:
                    convert_with_cli(name, repository, env)
                else:
                    convert_model(None, repository, name)
        seen = list(model_repository.seen)
    return Deployment(repository, saved, seen)


@pytest.fixture(scope="module")
def server(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_server(deployment.repository, log_dir=Path(tmp_path_factory.mktemp("tf_e2e_logs"))) as running:
        yield running


def manifest_of(deployment: Deployment, name: str) -> Manifest:
    manifest = read_manifest(deployment.repository / name / "1")
    assert manifest is not None
    return manifest


def v2_infer(server: RunningServer, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    body = {
        "inputs": [
            {"name": key, "shape": list(value.shape), "datatype": "FP32", "data": value.ravel().tolist()}
            for key, value in inputs.items()
        ]
    }
    response = requests.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return {
        out["name"]: np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        for out in response.json()["outputs"]
    }


def test_fetched_from_the_model_repository(deployment: Deployment) -> None:
    assert len(deployment.requests_seen) == len(CASES)
    assert {q.get("modelId") for q in deployment.requests_seen} == {str(n) for n in range(1, len(CASES) + 1)}
    assert {q.get("modelVersion") for q in deployment.requests_seen} == {"3"}


@pytest.mark.parametrize("name", list(CASES))
def test_bundle_records_parity_and_own_names(deployment: Deployment, name: str) -> None:
    manifest = manifest_of(deployment, name)
    saved = deployment.saved[name]
    assert manifest.source is not None and manifest.source.format == CASES[name][1]
    assert manifest.parity is not None and manifest.parity.verified
    assert manifest.parity.max_abs_error is not None and manifest.parity.max_abs_error <= ATOL
    assert manifest.parity.samples >= 2
    assert sorted(i.name for i in manifest.inputs) == sorted(saved.inputs)
    assert [o.name for o in manifest.outputs] == list(saved.outputs)
    assert all(t.shape[0] == -1 for t in (*manifest.inputs, *manifest.outputs))
    assert {"tensorflow", "tf2onnx"} <= set(manifest.source.converters)
    assert (deployment.repository / name / "config.pbtxt").is_file()


def test_checkpoint_bundle_records_newest_step(deployment: Deployment) -> None:
    manifest = manifest_of(deployment, "checkpoint")
    assert manifest.source is not None and manifest.source.detail["step"] == 1200
    recorded = json.loads((deployment.repository / "checkpoint" / "1" / "modelport.json").read_text())
    assert recorded["source"]["detail"]["step"] == 1200


@pytest.mark.parametrize("name", list(CASES))
def test_http_prediction_matches_source_framework(server: RunningServer, deployment: Deployment, name: str) -> None:
    saved = deployment.saved[name]
    got = v2_infer(server, name, saved.inputs)
    assert list(got) == list(saved.outputs)
    for output, want in saved.outputs.items():
        assert got[output].shape == want.shape
        np.testing.assert_allclose(got[output], want, atol=ATOL, rtol=0, err_msg=f"{name}/{output}")


def test_checkpoint_serves_newest_step_not_older(server: RunningServer, deployment: Deployment) -> None:
    saved = deployment.saved["checkpoint"]
    got = v2_infer(server, "checkpoint", saved.inputs)["probs"]
    np.testing.assert_allclose(got, saved.outputs["probs"], atol=ATOL, rtol=0)
    assert sorted(saved.other_steps) == [100, 300]
    for step, older in saved.other_steps.items():
        assert np.abs(got - older["probs"]).max() > 1e-2, f"served numbers look like step {step}"


def test_two_input_two_output_metadata_and_tritonclient(server: RunningServer, deployment: Deployment) -> None:
    """A standard client sees the Keras names and gets both outputs."""
    import tritonclient.http as triton

    saved = deployment.saved["keras3-zip-two-io"]
    client = triton.InferenceServerClient(server.address)
    metadata = client.get_model_metadata("keras3-zip-two-io")
    assert [i["name"] for i in metadata["inputs"]] == ["features", "extra"]
    assert [o["name"] for o in metadata["outputs"]] == ["score", "klass"]
    requests_ = []
    for key, value in saved.inputs.items():
        tensor = triton.InferInput(key, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value, binary_data=True)
        requests_.append(tensor)
    outputs = [triton.InferRequestedOutput(n, binary_data=True) for n in ("score", "klass")]
    result = client.infer("keras3-zip-two-io", requests_, outputs=outputs)
    for name, want in saved.outputs.items():
        np.testing.assert_allclose(result.as_numpy(name), want, atol=ATOL, rtol=0)
