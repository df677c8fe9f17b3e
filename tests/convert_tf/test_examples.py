"""The built-in examples, as a new user meets them: ``examples/make_examples.py`` builds the models,
the pipeline converts them (with ``examples/labels.txt``), the runtime serves them, and the
committed ``examples/sample.jpg`` uploaded to the image endpoint comes back ``red``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import requests

from bundle.manifest import read_manifest
from tests.support.examples import EXAMPLES, LABELS, Built
from tests.support.server import RunningServer, run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(examples_built: Built) -> Built:
    return examples_built


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
