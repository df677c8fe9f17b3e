"""PyTorch models the old platform's way, all the way: zip with ``model/model/...`` served by a
stand-in model repository, ``python -m convert`` (CLI, child process), the real runtime server,
and V2 HTTP predictions compared against torch."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from bundle.manifest import read_manifest
from tests.convert_torch.builders import Artifacts
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env
from tests.support.server import ROOT, RunningServer, run_server

ATOL = 1e-4
V2_NUMPY = {"FP32": np.float32, "INT64": np.int64}
MEAN, STD = "0.485,0.456,0.406", "0.229,0.224,0.225"  # ImageNet's, as torchvision models use


@dataclass
class Case:
    model_id: str
    name: str
    packed: Path  # what the zip holds under model/model/
    cli_args: list[str]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convert", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def torchscript_predict(path: Path, *arrays: np.ndarray) -> list[np.ndarray]:
    """torch's own answer, from the TorchScript twin of a model (same weights, no class import)."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        result = module(*(torch.from_numpy(a) for a in arrays))
    return [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]


def v2_infer(server: RunningServer, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    body = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": "INT64" if array.dtype == np.int64 else "FP32",
                "data": array.ravel().tolist(),
            }
            for name, array in inputs.items()
        ]
    }
    response = requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return {
        out["name"]: np.asarray(out["data"], dtype=V2_NUMPY[out["datatype"]]).reshape(out["shape"])
        for out in response.json()["outputs"]
    }


@pytest.fixture(scope="module")
def converted_repository(torch_models: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three models through the model repository and the CLI into one bundle repository."""
    work = tmp_path_factory.mktemp("torch_e2e")
    # A pickled module with its class module beside it, as a data scientist would hand it over.
    pickle_dir = work / "cnn_pickle"
    pickle_dir.mkdir()
    shutil.copy(torch_models.path("cnn", "pickle"), pickle_dir / "model.pt")
    nets_file = torch_models.directory / f"{torch_models.nets_module}.py"
    shutil.copy(nets_file, pickle_dir / nets_file.name)
    cases = [
        Case("101", "cnn", pickle_dir, ["--input-shape", "x=1,3,32,32", "--mean", MEAN, "--std", STD]),
        Case(
            "102",
            "two_io",
            torch_models.path("two_io", "trace"),
            ["--input-shape", "a=1,4", "--input-shape", "b=1,2", "--outputs", "scores,total"],
        ),
        Case(
            "103",
            "embedding",
            torch_models.path("embedding", "script"),
            ["--input-shape", "ids=1,5", "--input-dtype", "INT64"],
        ),
    ]
    repository = work / "models"
    with ModelRepositoryServer() as repo:
        for case in cases:
            repo.add(case.model_id, pack_old_platform_zip(case.packed, work / f"{case.name}.zip"))
            with repository_env(repo, model_id=case.model_id, model_version="1", guid="e2e") as env:
                result = run_cli("--repository", str(repository), "--name", case.name, *case.cli_args, env=env)
            assert result.returncode == 0, result.stderr
            assert f"{case.name} v1: " in result.stdout and "parity max abs" in result.stdout
        assert repo.requests == len(cases)
    yield repository


@pytest.fixture(scope="module")
def server(converted_repository: Path) -> Iterator[RunningServer]:
    with run_server(converted_repository) as running:
        yield running


@pytest.mark.slow
def test_manifests_record_the_conversion(converted_repository: Path) -> None:
    cnn = read_manifest(converted_repository / "cnn" / "1")
    assert cnn.source.format == "torch_pickle" and cnn.source.detail["exporter"] == "dynamo"
    assert cnn.source.detail["class"].endswith(".SmallCNN")
    assert [(t.name, t.datatype, t.shape) for t in cnn.inputs] == [("x", "FP32", [-1, 3, 32, 32])]
    assert cnn.image is not None and cnn.image.layout == "NCHW" and (cnn.image.height, cnn.image.width) == (32, 32)
    assert cnn.image.mean == [0.485, 0.456, 0.406] and cnn.image.std == [0.229, 0.224, 0.225]
    two_io = read_manifest(converted_repository / "two_io" / "1")
    assert two_io.source.format == "torchscript" and two_io.source.detail["exporter"] == "torchscript"
    assert [t.name for t in two_io.inputs] == ["a", "b"] and [t.name for t in two_io.outputs] == ["scores", "total"]
    embedding = read_manifest(converted_repository / "embedding" / "1")
    assert [(t.name, t.datatype) for t in embedding.inputs] == [("ids", "INT64")]
    for manifest in (cnn, two_io, embedding):
        assert manifest.parity.verified and manifest.parity.samples >= 2
        assert manifest.parity.max_abs_error <= ATOL
        assert set(manifest.source.converters) == {"torch", "onnx", "onnxscript"}


@pytest.mark.slow
def test_pickled_cnn_served_matches_torch(server: RunningServer, torch_models: Artifacts) -> None:
    x = np.random.default_rng(11).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = v2_infer(server, "cnn", {"x": x})
    (expected,) = torchscript_predict(torch_models.path("cnn", "script"), x)
    assert got["output"].shape == (3, 5)
    np.testing.assert_allclose(got["output"], expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_image_upload_to_the_pickled_cnn_matches_torch(server: RunningServer, torch_models: Artifacts) -> None:
    """The simple API's upload path: PNG -> RGB, /255, ImageNet mean/std, NCHW -> the converted model."""
    from PIL import Image

    pixels = np.random.default_rng(14).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(png, format="PNG")
    response = requests.post(
        f"{server.url}/api/models/cnn/image", files={"image": ("x.png", png.getvalue(), "image/png")}, timeout=60
    )
    assert response.status_code == 200, response.text
    mean = np.array([float(v) for v in MEAN.split(",")], dtype=np.float32)
    std = np.array([float(v) for v in STD.split(",")], dtype=np.float32)
    x = ((pixels.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
    (expected,) = torchscript_predict(torch_models.path("cnn", "script"), np.ascontiguousarray(x))
    np.testing.assert_allclose(np.asarray(response.json()["outputs"]["output"]), expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_two_input_two_output_served_matches_torch(server: RunningServer, torch_models: Artifacts) -> None:
    rng = np.random.default_rng(12)
    a = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal((5, 2)).astype(np.float32)
    got = v2_infer(server, "two_io", {"a": a, "b": b})
    scores, total = torchscript_predict(torch_models.path("two_io", "script"), a, b)
    np.testing.assert_allclose(got["scores"], scores, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got["total"], total, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_integer_input_served_matches_torch(server: RunningServer, torch_models: Artifacts) -> None:
    ids = np.random.default_rng(13).integers(0, 20, size=(3, 5)).astype(np.int64)
    got = v2_infer(server, "embedding", {"ids": ids})
    (expected,) = torchscript_predict(torch_models.path("embedding", "script"), ids)
    np.testing.assert_allclose(got["output"], expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_state_dict_from_repository_fails_cleanly(torch_models: Artifacts, tmp_path: Path) -> None:
    zip_path = pack_old_platform_zip(torch_models.directory / "mlp_state_dict.pt", tmp_path / "weights.zip")
    repository = tmp_path / "models"
    with ModelRepositoryServer() as repo:
        repo.add("7", zip_path)
        with repository_env(repo, model_id="7") as env:
            result = run_cli("--repository", str(repository), "--name", "mlp", "--input-shape", "x=1,6", env=env)
    assert result.returncode == 2, result.stderr
    # named as the user knows it: the repository URL (GUID redacted) and the member, not a temp path
    assert f"error: {repo.url}/?modelId=7" in result.stderr and "guid=REDACTED" in result.stderr
    assert "(member model/model/mlp_state_dict.pt): holds a bare state_dict" in result.stderr
    assert "modelport-convert-" not in result.stderr
    assert "torch.jit.save" in result.stderr
    assert not repository.exists() or not any(repository.iterdir())


@pytest.mark.slow
def test_missing_input_shape_fails_with_usage(torch_models: Artifacts, tmp_path: Path) -> None:
    result = run_cli(str(torch_models.path("mlp", "script")), "--repository", str(tmp_path / "models"), "--name", "mlp")
    assert result.returncode == 2, result.stderr
    assert "--input-shape NAME=d0,d1,..." in result.stderr and "e.g. --input-shape x=1,3,224,224" in result.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.mark.slow
def test_mixed_integer_and_float_inputs_through_the_cli(torch_models: Artifacts, tmp_path: Path) -> None:
    source = tmp_path / "ranker"
    source.mkdir()
    shutil.copy(torch_models.path("mixed", "pickle"), source / "model.pt")
    nets_file = torch_models.directory / f"{torch_models.nets_module}.py"
    shutil.copy(nets_file, source / nets_file.name)
    repository = tmp_path / "models"
    result = run_cli(
        str(source),
        "--repository",
        str(repository),
        "--name",
        "ranker",
        "--input-shape",
        "ids=1,4",
        "--input-shape",
        "x=1,3",
        "--input-dtype",
        "ids=INT64",
    )
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(repository / "ranker" / "1")
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [
        ("ids", "INT64", [-1, 4]),
        ("x", "FP32", [-1, 3]),
    ]
    assert manifest.parity.verified and manifest.parity.max_abs_error <= ATOL

    bad = run_cli(
        str(source),
        "--repository",
        str(repository),
        "--name",
        "ranker2",
        "--input-shape",
        "ids=1,4",
        "--input-shape",
        "x=1,3",
        "--input-dtype",
        "ids=COMPLEX",
    )
    assert bad.returncode == 2 and "--input-dtype 'COMPLEX' is not supported" in bad.stderr, bad.stderr
    assert not (repository / "ranker2").exists()
