"""End to end from the old platform's model repository: a pickled scikit-learn pipeline zipped
under model/model/, downloaded (XQUERY_ADDR...), converted to PMML, served, predicted over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import requests

from bundle.manifest import read_manifest
from tests.pmml.models import TrainedModels, query_frame
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env
from tests.support.server import run_server

ROOT = Path(__file__).resolve().parents[2]


def test_pickled_pipeline_from_the_model_repository(trained: TrainedModels, tmp_path: Path) -> None:
    zip_path = pack_old_platform_zip(trained.paths["categorical"], tmp_path / "download.zip")
    models = tmp_path / "models"
    with ModelRepositoryServer() as repo:
        repo.add("77", zip_path)
        with repository_env(repo, model_id="77", model_version="3") as variables:
            result = subprocess.run(
                [sys.executable, "-m", "convert", "--repository", str(models), "--name", "churn"],
                cwd=ROOT,
                env={**os.environ, **variables, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                timeout=600,
            )
        assert result.returncode == 0, result.stderr[-3000:]
        assert repo.requests == 1 and repo.seen[0]["modelId"] == "77"
    manifest = read_manifest(models / "churn" / "1")
    assert manifest.format == "pmml" and manifest.source.format == "sklearn"
    assert manifest.parity.verified and manifest.parity.label_agreement == 1.0

    model, frame = trained.categorical, query_frame(20)
    records = frame[list(model.feature_names_in_)].to_dict(orient="records")
    with run_server(models) as server:
        response = requests.post(f"{server.url}/api/models/churn/predict", json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()["records"]
    assert [r["y"] for r in answer] == list(model.predict(frame))
    np.testing.assert_allclose([r["probability(yes)"] for r in answer], model.predict_proba(frame)[:, 1], atol=1e-9)
