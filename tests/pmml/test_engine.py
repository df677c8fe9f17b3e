"""The PMML engine on its own (no HTTP): numbers against scikit-learn and the hand-computed
regression, request checks, the 2-D input, threads, and lazy JVM start."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pandas.api.types import is_numeric_dtype

from bundle.manifest import read_manifest
from runtime.engines import EngineOptions, load_engine
from runtime.engines.pmml import FIELDS_INPUT
from runtime.errors import BadRequest, ModelLoadError
from tests.pmml.conftest import CLAIMS_PMML, ConvertedRepository, claims_by_hand
from tests.pmml.models import NUMERIC, TrainedModels, query_frame

ROOT = Path(__file__).resolve().parents[2]


def engine_for(repository: ConvertedRepository, name: str, derived: bool = False):
    version_dir = repository.path / name / "1"
    return load_engine("pmml", version_dir, None if derived else read_manifest(version_dir), EngineOptions())


def columns(frame, names) -> dict[str, np.ndarray]:
    return {n: frame[n].to_numpy(np.float64 if is_numeric_dtype(frame[n]) else object) for n in names}


def text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


@pytest.mark.parametrize("derived", [False, True], ids=["manifest", "derived-from-pmml"])
def test_hand_written_pmml_predicts_the_equation(repository: ConvertedRepository, derived: bool) -> None:
    engine = engine_for(repository, "claims", derived)
    rows = [(30.0, 1000.0, "street"), (45.5, 52000.0, "carpark"), (0.0, 0.0, "carpark")]
    inputs = {
        "age": np.array([r[0] for r in rows]),
        "salary": np.array([r[1] for r in rows]),
        "car_location": np.array([r[2].encode() for r in rows], dtype=object),
    }
    out = engine.predict(engine.validate(inputs))
    assert engine.manifest.target == "number_of_claims"
    np.testing.assert_allclose(out["number_of_claims"], [claims_by_hand(*r) for r in rows], rtol=1e-12)
    engine.close()


def test_derived_manifest_lists_the_fields(repository: ConvertedRepository) -> None:
    engine = engine_for(repository, "claims", derived=True)
    specs = {s.name: s for s in engine.manifest.inputs}
    assert [(s.name, s.datatype) for s in engine.manifest.inputs] == [
        ("age", "FP64"),
        ("salary", "FP64"),
        ("car_location", "BYTES"),
    ]
    assert specs["car_location"].allowed_values == ["carpark", "street"]
    assert [(o.name, o.datatype) for o in engine.manifest.outputs] == [("number_of_claims", "FP64")]
    assert (repository.path / "claims" / "1" / "model.pmml").read_bytes() == CLAIMS_PMML.read_bytes()


@pytest.mark.parametrize("name", ["logistic", "forest", "categorical"])
def test_converted_pmml_matches_scikit_learn(repository: ConvertedRepository, trained: TrainedModels, name: str):
    model = getattr(trained, name)
    frame = query_frame()
    fields = [s.name for s in repository.manifests[name].inputs]
    engine = engine_for(repository, name)
    out = engine.predict(engine.validate(columns(frame, fields)))
    sk_frame = frame[list(model.feature_names_in_)]
    assert text(out["y"]) == [str(v) for v in model.predict(sk_frame)]
    proba = model.predict_proba(sk_frame)
    for i, cls in enumerate(model.classes_):
        np.testing.assert_allclose(out[f"probability({cls})"], proba[:, i], atol=1e-9)
    engine.close()


def test_single_matrix_input_equals_per_field_inputs(repository: ConvertedRepository) -> None:
    engine = engine_for(repository, "logistic")
    frame = query_frame()
    order = [s.name for s in engine.manifest.inputs]
    assert order == NUMERIC  # the training DataFrame's column order
    per_field = engine.predict(engine.validate(columns(frame, order)))
    matrix = engine.predict(engine.validate({FIELDS_INPUT: frame[order].to_numpy(np.float64)}))
    for name, value in per_field.items():
        np.testing.assert_array_equal(matrix[name], value)


def test_column_shapes_n_and_n_by_1_and_numeric_text(repository: ConvertedRepository) -> None:
    engine = engine_for(repository, "logistic")
    flat = engine.predict(engine.validate({"width": np.array([5.0, 7.5]), "height": np.array([-1.0, 0.25])}))
    tall = engine.predict(
        engine.validate(
            {"width": np.array([[5.0], [7.5]]), "height": np.array([b"-1.0", b"0.25"], dtype=object).reshape(2, 1)}
        )
    )
    np.testing.assert_array_equal(flat["probability(1)"], tall["probability(1)"])


BAD_REQUESTS = [
    ({"width": [1.0]}, "missing field 'height'"),
    ({"width": [1.0], "height": [1.0], "colour": [b"red"]}, "unknown field 'colour'"),
    ({"width": [b"wide"], "height": [1.0]}, "field 'width' is numeric: row 0 is 'wide'"),
    ({"width": [1.0, float("nan")], "height": [1.0, 2.0]}, "field 'width': row 1"),
    ({"width": [1.0, 2.0], "height": [1.0]}, "field 'height': 1 rows"),
    ({"width": [[1.0, 2.0]], "height": [1.0]}, "field 'width': expected shape [N] or [N,1]"),
    ({FIELDS_INPUT: [[1.0, 2.0, 3.0]]}, "expected shape [N, 2]"),
    ({FIELDS_INPUT: [[1.0, 2.0]], "width": [1.0]}, "do not also send width"),
]


@pytest.mark.parametrize(("inputs", "message"), BAD_REQUESTS)
def test_bad_numeric_requests_name_the_field(repository: ConvertedRepository, inputs: dict, message: str) -> None:
    engine = engine_for(repository, "logistic")
    arrays = {k: np.array(v, dtype=object if isinstance(v[0], bytes) else None) for k, v in inputs.items()}
    with pytest.raises(BadRequest) as caught:
        engine.validate(arrays)
    assert message in str(caught.value)


def test_bad_categorical_requests_name_the_field(repository: ConvertedRepository) -> None:
    engine = engine_for(repository, "categorical")
    good = {"width": np.array([1.0]), "height": np.array([1.0]), "color": np.array([b"red"], dtype=object)}
    engine.validate(good)
    with pytest.raises(BadRequest, match="field 'color': row 0 value 'purple' is not one of blue, green, red"):
        engine.validate({**good, "color": np.array([b"purple"], dtype=object)})
    with pytest.raises(BadRequest, match="field 'color' is a string field"):
        engine.validate({**good, "color": np.array([3.0])})
    with pytest.raises(BadRequest, match="needs all-numeric fields; field 'color' is text"):
        engine.validate({FIELDS_INPUT: np.zeros((1, 3))})


def test_predict_from_many_worker_threads(repository: ConvertedRepository) -> None:
    engine = engine_for(repository, "categorical")
    frame = query_frame(40)
    inputs = engine.validate(columns(frame, [s.name for s in engine.manifest.inputs]))
    expected = engine.predict(inputs)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: engine.predict(inputs), range(16)))
    for result in results:
        np.testing.assert_array_equal(result["probability(yes)"], expected["probability(yes)"])
        assert text(result["y"]) == text(expected["y"])


def test_output_selection_and_empty_batch(repository: ConvertedRepository) -> None:
    engine = engine_for(repository, "logistic")
    out = engine.predict(engine.validate({"width": np.array([6.0]), "height": np.array([0.0])}), ["y"])
    assert list(out) == ["y"] and out["y"].dtype == np.int64
    empty = engine.predict(engine.validate({"width": np.zeros(0), "height": np.zeros(0)}))
    assert all(v.shape == (0,) for v in empty.values())


def test_unloadable_document_names_the_file(tmp_path: Path) -> None:
    version_dir = tmp_path / "broken" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.pmml").write_text("<PMML><DataDictionary>")
    with pytest.raises(ModelLoadError, match=r"model\.pmml"):
        load_engine("pmml", version_dir, None, EngineOptions())


def test_importing_the_engine_starts_no_jvm() -> None:
    code = (
        "import sys, runtime.engines.pmml\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'libjvm' not in maps, 'JVM loaded on import'\n"
        "assert 'jpype' not in sys.modules and 'pypmml' not in sys.modules, 'pypmml imported eagerly'\n"
        "assert 'onnxruntime' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
