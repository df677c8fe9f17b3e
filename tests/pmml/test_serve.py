"""PMML and scikit-learn models served by the real server (``.venv/serve``) over HTTP: V2 through
tritonclient (JSON and binary), the simple API with records, 400s naming the field, and process
hygiene (a PMML server loads no onnxruntime, an ONNX server starts no JVM, no java survives)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from pandas.api.types import is_numeric_dtype

from tests.pmml.conftest import ConvertedRepository, claims_by_hand
from tests.pmml.models import NUMERIC, TrainedModels, query_frame
from tests.support.server import RunningServer, run_server

PMML_MODELS = ["logistic", "forest", "categorical", "claims"]
PROBABILITY_ATOL = 1e-9  # PMML scores in double precision, like scikit-learn
ONNX_PROBABILITY_ATOL = 1e-5  # float32 inside ONNX


def subset(repository: ConvertedRepository, names: list[str], destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(repository.path / name, destination / name)
    return destination


def java_processes() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if comm == "java" or "pypmml/jars" in cmdline:
                found[int(entry.name)] = cmdline
    return found


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def pmml_server(repository: ConvertedRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = subset(repository, PMML_MODELS, tmp_path_factory.mktemp("pmml_serve") / "models")
    java_before = java_processes()
    with run_server(root) as server:
        yield server
        assert not children(server.process.pid), "the PMML server started a child process"
    assert server.process.returncode == 0, f"no graceful stop on SIGTERM (the JVM's signal handlers?):\n{server.log()}"
    leftover = {pid: cmd for pid, cmd in java_processes().items() if pid not in java_before}
    assert not leftover, f"java processes survived the PMML server: {leftover}"


@pytest.fixture(scope="module")
def onnx_server(repository: ConvertedRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = subset(repository, ["categorical_onnx"], tmp_path_factory.mktemp("onnx_serve") / "models")
    with run_server(root) as server:
        yield server


def field_inputs(frame, manifest, binary: bool = False) -> list[httpclient.InferInput]:
    inputs = []
    for spec in manifest.inputs:
        numeric = is_numeric_dtype(frame[spec.name])
        dtype = {"FP64": np.float64, "FP32": np.float32}.get(spec.datatype, object)
        values = frame[spec.name].to_numpy(dtype if numeric else object)
        if spec.datatype == "BYTES":
            values = np.array([v.encode() for v in values], dtype=object)
        values = values.reshape([len(frame), *spec.shape[1:]])
        tensor = httpclient.InferInput(spec.name, list(values.shape), spec.datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def labels(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(values).tolist()]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", ["logistic", "forest", "categorical"])
def test_v2_predictions_equal_scikit_learn(
    pmml_server: RunningServer, repository: ConvertedRepository, trained: TrainedModels, name: str, binary: bool
) -> None:
    model, frame = getattr(trained, name), query_frame()
    manifest = repository.manifests[name]
    client = httpclient.InferenceServerClient(pmml_server.address)
    assert client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    assert [i["name"] for i in metadata["inputs"]] == [s.name for s in manifest.inputs]
    outputs = [httpclient.InferRequestedOutput(o.name, binary_data=binary) for o in manifest.outputs]
    result = client.infer(name, field_inputs(frame, manifest, binary), outputs=outputs)
    sk_frame = frame[list(model.feature_names_in_)]
    assert labels(result.as_numpy("y")) == [str(v) for v in model.predict(sk_frame)]
    proba = model.predict_proba(sk_frame)
    for i, cls in enumerate(model.classes_):
        np.testing.assert_allclose(result.as_numpy(f"probability({cls})"), proba[:, i], atol=PROBABILITY_ATOL)


def test_v2_single_matrix_input(pmml_server: RunningServer, trained: TrainedModels) -> None:
    frame = query_frame()
    matrix = frame[NUMERIC].to_numpy(np.float64)
    tensor = httpclient.InferInput("input__fields", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix, binary_data=False)
    result = httpclient.InferenceServerClient(pmml_server.address).infer("logistic", [tensor])
    np.testing.assert_allclose(
        result.as_numpy("probability(1)"), trained.logistic.predict_proba(frame[NUMERIC])[:, 1], atol=PROBABILITY_ATOL
    )


@pytest.mark.parametrize("name", ["logistic", "forest", "categorical"])
def test_simple_api_records_equal_scikit_learn(pmml_server: RunningServer, trained: TrainedModels, name: str) -> None:
    model, frame = getattr(trained, name), query_frame(12)
    sk_frame = frame[list(model.feature_names_in_)]
    records = sk_frame.to_dict(orient="records")
    response = requests.post(f"{pmml_server.url}/api/models/{name}/predict", json=records, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()["records"]
    assert [str(r["y"]) for r in answer] == [str(v) for v in model.predict(sk_frame)]
    proba = model.predict_proba(sk_frame)
    for i, cls in enumerate(model.classes_):
        got = [r[f"probability({cls})"] for r in answer]
        np.testing.assert_allclose(got, proba[:, i], atol=PROBABILITY_ATOL)


def test_hand_written_pmml_over_http(pmml_server: RunningServer) -> None:
    rows = [[30, 1000, "street"], [45.5, 52000, "carpark"]]
    body = {"columns": ["age", "salary", "car_location"], "rows": rows}
    response = requests.post(f"{pmml_server.url}/api/models/claims/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    got = [r["number_of_claims"] for r in response.json()["records"]]
    np.testing.assert_allclose(got, [claims_by_hand(*r) for r in rows], rtol=1e-12)


BAD_RECORDS = [
    ([{"width": 1.0}], "height"),  # missing field
    ([{"width": 1.0, "height": 2.0, "colour": "red"}], "colour"),  # unknown field
    ([{"width": "wide", "height": 2.0}], "width"),  # text in a numeric field
]


@pytest.mark.parametrize(("records", "field"), BAD_RECORDS, ids=["missing", "unknown", "text-in-number"])
def test_bad_records_are_400_naming_the_field(pmml_server: RunningServer, records: list, field: str) -> None:
    response = requests.post(f"{pmml_server.url}/api/models/logistic/predict", json=records, timeout=30)
    assert response.status_code == 400
    assert f"'{field}'" in response.json()["error"]


def test_bad_v2_requests_are_400_naming_the_field(pmml_server: RunningServer) -> None:
    url = f"{pmml_server.url}/v2/models/categorical/infer"
    good = [
        {"name": "width", "datatype": "FP64", "shape": [1], "data": [5.0]},
        {"name": "height", "datatype": "FP64", "shape": [1], "data": [-1.0]},
        {"name": "color", "datatype": "BYTES", "shape": [1], "data": ["red"]},
    ]
    assert requests.post(url, json={"inputs": good}, timeout=30).status_code == 200
    cases = {
        "height": [good[0], good[2]],
        "width": [{**good[0], "datatype": "BYTES", "data": ["wide"]}, *good[1:]],
        "color": [*good[:2], {**good[2], "data": ["purple"]}],
        "size": [*good, {"name": "size", "datatype": "FP64", "shape": [1], "data": [1.0]}],
    }
    for field, inputs in cases.items():
        response = requests.post(url, json={"inputs": inputs}, timeout=30)
        assert response.status_code == 400, (field, response.text)
        assert f"'{field}'" in response.json()["error"]
    assert requests.get(f"{pmml_server.url}/v2/health/ready", timeout=5).status_code == 200


def test_pmml_server_loads_no_onnxruntime(pmml_server: RunningServer) -> None:
    maps = mapped_libraries(pmml_server.process.pid)
    assert "libjvm" in maps  # the JVM runs inside the server (JPype), not as a child
    assert "onnxruntime" not in maps
    assert not children(pmml_server.process.pid)


def test_onnx_target_served_without_a_jvm(onnx_server: RunningServer, repository, trained: TrainedModels) -> None:
    manifest = repository.manifests["categorical_onnx"]
    frame = query_frame()
    client = httpclient.InferenceServerClient(onnx_server.address)
    result = client.infer("categorical_onnx", field_inputs(frame, manifest))
    model = trained.categorical
    float32_frame = frame.assign(**{n: frame[n].astype(np.float32).astype(np.float64) for n in NUMERIC})
    assert labels(result.as_numpy("label")) == list(model.predict(float32_frame))
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), model.predict_proba(float32_frame), atol=ONNX_PROBABILITY_ATOL
    )
    records = frame.head(5).to_dict(orient="records")
    response = requests.post(f"{onnx_server.url}/api/models/categorical_onnx/predict", json=records, timeout=30)
    assert response.status_code == 200, response.text
    assert [r["label"] for r in response.json()["records"]] == list(model.predict(float32_frame.head(5)))
    maps = mapped_libraries(onnx_server.process.pid)
    assert "libjvm" not in maps and "onnxruntime" in maps
    assert not [pid for pid in children(onnx_server.process.pid) if "java" in java_processes().get(pid, "")]
    assert os.path.exists(f"/proc/{onnx_server.process.pid}")
