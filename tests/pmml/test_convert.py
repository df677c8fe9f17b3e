"""The PMML pass-through and scikit-learn converters: recorded fields, parity figures and notes,
--sample CSV, --target onnx, and clear refusals."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from bundle.manifest import read_manifest, sha256_file
from convert.errors import ConversionError
from convert.formats import ConvertOptions, TabularOptions
from convert.pipeline import convert_model
from tests.pmml.conftest import ConvertedRepository
from tests.pmml.models import TrainedModels, query_frame, training_frame

ROOT = Path(__file__).resolve().parents[2]


def test_field_names_types_and_categories_come_from_the_dataframe(repository: ConvertedRepository) -> None:
    manifest = repository.manifests["categorical"]
    assert [(s.name, s.datatype) for s in manifest.inputs] == [
        ("width", "FP64"),
        ("height", "FP64"),
        ("color", "BYTES"),
    ]
    assert manifest.inputs[2].allowed_values == ["blue", "green", "red"]
    assert manifest.target == "y"
    assert [o.name for o in manifest.outputs] == ["y", "probability(no)", "probability(yes)", "probability"]
    assert manifest.format == "pmml" and manifest.source.format == "sklearn"
    assert "sklearn2pmml" in manifest.source.converters
    written = read_manifest(repository.path / "categorical" / "1")
    assert written.sha256 == sha256_file(repository.path / "categorical" / "1" / "model.pmml")


@pytest.mark.parametrize("name", ["logistic", "forest", "categorical"])
def test_parity_is_recorded_against_scikit_learn(repository: ConvertedRepository, name: str) -> None:
    parity = repository.manifests[name].parity
    assert parity.verified and parity.samples >= 32
    assert parity.label_agreement == 1.0
    assert parity.max_abs_error is not None and parity.max_abs_error < 1e-9


def test_tree_ensemble_behind_a_scaler_reports_float32_rounding(repository: ConvertedRepository) -> None:
    notes = " ".join(repository.manifests["forest"].parity.notes)
    assert "float32" in notes and "verification rows that rounding crosses a threshold" in notes


def test_hand_written_pmml_passes_through_unverified_but_scored(repository: ConvertedRepository) -> None:
    manifest = repository.manifests["claims"]
    assert manifest.parity.verified is False
    assert any("pypmml is the only scorer" in note for note in manifest.parity.notes)
    assert any("loaded and ran on" in note for note in manifest.parity.notes)
    assert manifest.source.format == "pmml"


def test_onnx_target_has_plain_label_and_probability_tensors(repository: ConvertedRepository) -> None:
    manifest = repository.manifests["categorical_onnx"]
    assert manifest.format == "onnx"
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [
        ("width", "FP32", [-1, 1]),
        ("height", "FP32", [-1, 1]),
        ("color", "BYTES", [-1, 1]),
    ]
    assert [(o.name, o.datatype) for o in manifest.outputs] == [("label", "BYTES"), ("probabilities", "FP32")]
    assert manifest.labels == ["no", "yes"] and manifest.label_output == "probabilities"
    graph = onnx.load(repository.path / "categorical_onnx" / "1" / "model.onnx").graph
    assert "ZipMap" not in {node.op_type for node in graph.node}
    assert manifest.parity.verified and manifest.parity.label_agreement == 1.0


def test_sample_csv_rows_are_used_for_verification(trained: TrainedModels, tmp_path: Path) -> None:
    sample = tmp_path / "rows.csv"
    query_frame(17).assign(extra="ignored").to_csv(sample, index=False)
    manifest = convert_model(
        trained.paths["categorical"],
        tmp_path / "repo",
        "m",
        options=ConvertOptions(format_options=[TabularOptions(sample_csv=sample)]),
    )
    assert manifest.parity.samples == 17
    assert any("verified on 17 rows of rows.csv" in note for note in manifest.parity.notes)


def test_sample_csv_without_a_field_is_refused(trained: TrainedModels, tmp_path: Path) -> None:
    sample = tmp_path / "rows.csv"
    query_frame(5).drop(columns=["color"]).to_csv(sample, index=False)
    with pytest.raises(ConversionError, match=r"no column for field.*color"):
        convert_model(
            trained.paths["categorical"],
            tmp_path / "repo",
            "m",
            options=ConvertOptions(format_options=[TabularOptions(sample_csv=sample)]),
        )
    assert not (tmp_path / "repo" / "m").exists()


def test_model_fitted_on_an_array_gets_x1_to_xn_and_regression_output(tmp_path: Path) -> None:
    frame = training_frame(60)
    values = frame[["width", "height"]].to_numpy()
    model = LinearRegression().fit(values, values @ np.array([2.0, -3.0]) + 1.0)
    source = tmp_path / "regression.pkl"
    source.write_bytes(pickle.dumps(model))
    manifest = convert_model(source, tmp_path / "repo", "reg")
    assert [s.name for s in manifest.inputs] == ["x1", "x2"]
    assert [(o.name, o.datatype) for o in manifest.outputs] == [("y", "FP64")]
    assert manifest.parity.verified and manifest.parity.max_abs_error < 1e-9


def test_a_pickle_without_predict_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "scaler.pkl"
    source.write_bytes(pickle.dumps(StandardScaler().fit(np.zeros((3, 2)))))
    with pytest.raises(ConversionError, match=r"scaler\.pkl.*not an estimator with predict"):
        convert_model(source, tmp_path / "repo", "m")


def test_cli_target_onnx(trained: TrainedModels, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convert",
            str(trained.paths["logistic"]),
            "--repository",
            str(tmp_path / "repo"),
            "--name",
            "lr",
            "--target",
            "onnx",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = read_manifest(tmp_path / "repo" / "lr" / "1")
    assert manifest.format == "onnx" and [s.name for s in manifest.inputs] == ["width", "height"]
    assert [o.name for o in manifest.outputs] == ["label", "probabilities"]
