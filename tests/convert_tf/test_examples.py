"""The built-in examples, as a new user meets them: ``examples/make_examples.py`` builds the models,
the pipeline converts them (with ``examples/labels.txt``), the runtime serves them, and the
committed ``examples/sample.jpg`` uploaded to the image endpoint comes back ``red``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from bundle.manifest import read_manifest
from convert.formats import ConvertOptions
from convert.pipeline import convert_model
from tests.support.server import ROOT, RunningServer, run_server

EXAMPLES = ROOT / "examples"
LABELS = [line.strip() for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line.strip()]
pytestmark = pytest.mark.slow


@dataclass
class Built:
    models: Path
    repository: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = Path(tmp_path_factory.mktemp("examples"))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_examples.py"), str(work / "build")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sample.jpg -> red" in result.stdout
    repository = work / "models"
    convert_model(
        work / "build" / "colour_classifier.keras",
        repository,
        "colour-classifier",
        options=ConvertOptions(labels=LABELS),
    )
    convert_model(work / "build" / "tabular_regressor.keras", repository, "tabular-regressor")
    return Built(work / "build", repository)


@pytest.fixture(scope="module")
def server(built: Built) -> Iterator[RunningServer]:
    with run_server(built.repository, log_dir=built.repository.parent) as running:
        yield running


def test_example_files(built: Built) -> None:
    assert sorted(p.name for p in built.models.iterdir()) == [
        "colour_classifier.keras",
        "labels.txt",
        "sample.jpg",
        "tabular_regressor.keras",
    ]
    assert (built.models / "sample.jpg").read_bytes() == (EXAMPLES / "sample.jpg").read_bytes()
    assert LABELS == ["red", "green", "blue", "yellow", "purple"]


def test_classifier_bundle_is_an_image_classifier(built: Built) -> None:
    manifest = read_manifest(built.repository / "colour-classifier" / "1")
    assert manifest is not None and manifest.parity is not None and manifest.parity.verified
    assert manifest.parity.max_abs_error is not None and manifest.parity.max_abs_error < 1e-4
    assert manifest.labels == LABELS and manifest.label_output == "probabilities"
    assert manifest.image is not None
    assert (manifest.image.input, manifest.image.layout, manifest.image.height, manifest.image.width) == (
        "image",
        "NHWC",
        64,
        64,
    )
    assert manifest.image.scale == pytest.approx(1 / 255)


def test_sample_image_is_classified_red(server: RunningServer) -> None:
    with open(EXAMPLES / "sample.jpg", "rb") as image:
        response = requests.post(
            f"{server.url}/api/models/colour-classifier/image",
            files={"image": ("sample.jpg", image, "image/jpeg")},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    top = response.json()["predictions"][0]
    assert top["label"] == "red" and top["score"] > 0.9


def test_tabular_prediction_matches_keras(server: RunningServer, built: Built) -> None:
    import keras

    model = keras.models.load_model(built.models / "tabular_regressor.keras", compile=False)
    features = np.random.default_rng(5).normal(size=(6, 8)).astype(np.float32)
    expected = np.asarray(model.predict(features, verbose=0))
    body = {"inputs": [{"name": "features", "shape": [6, 8], "datatype": "FP32", "data": features.ravel().tolist()}]}
    response = requests.post(f"{server.url}/v2/models/tabular-regressor/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["name"] == "prediction" and output["shape"] == [6, 1]
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(6, 1), expected, atol=1e-4, rtol=0)
