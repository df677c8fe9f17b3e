"""Property-based requests (hypothesis) against the live server, aimed where the generic OpenAPI fuzz
cannot reach: model-shaped payloads with hostile values, for an ONNX model and a PMML model.

Properties: the answer is 200 or a 4xx with an ``{"error"}`` body, never a 5xx; when every value is
valid the numbers are right (onnxruntime run directly, or the PMML model's equation written out).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability import models
from tests.support.server import ROOT, RunningServer, run_server

CLAIMS_PMML = ROOT / "tests" / "pmml" / "data" / "claims_regression.pmml"
EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True
)
DATATYPES = ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "FP8", ""]


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    """One server with an ONNX MLP and the hand-written PMML regression (JVM and onnxruntime together)."""
    repo = tmp_path_factory.mktemp("mixed_repo")
    mlp = models.write_mlp(repo)
    (repo / "claims" / "1").mkdir(parents=True)
    shutil.copy(CLAIMS_PMML, repo / "claims" / "1" / "model.pmml")
    with run_server(repo) as server:
        yield server, mlp


def claims_by_hand(age: float, salary: float, car_location: str) -> float:
    """The DMG example's regression equation (tests/pmml/data/claims_regression.pmml)."""
    return 132.37 + 7.1 * age + 0.01 * salary + {"carpark": 41.1, "street": 325.03}[car_location]


def assert_answer_or_client_error(response: requests.Response) -> bool:
    """True for a 200; a 4xx must carry a string ``error``; anything else fails."""
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        return True
    assert 400 <= response.status_code < 500
    assert isinstance(response.json()["error"], str)
    return False


hostile_scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
sane_numbers = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
locations = st.sampled_from(["carpark", "street"])


@st.composite
def claim_records(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = draw(st.integers(min_value=1, max_value=5))
    valid = draw(st.booleans())
    records = []
    for _ in range(rows):
        if valid:
            record: dict[str, Any] = {
                "age": draw(sane_numbers),
                "salary": draw(sane_numbers),
                "car_location": draw(locations),
            }
        else:
            keys = draw(st.sets(st.sampled_from(["age", "salary", "car_location", "other", ""]), max_size=4))
            record = {key: draw(st.one_of(hostile_scalars, sane_numbers, locations)) for key in keys}
        records.append(record)
    return records


@given(records=claim_records())
@EXAMPLES
def test_pmml_records_answer_right_or_refuse_clearly(
    mixed_server: tuple[RunningServer, Path], records: list[dict[str, Any]]
) -> None:
    server, _ = mixed_server
    response = requests.post(f"{server.url}/api/models/claims/predict", json=records, timeout=30)
    ok = assert_answer_or_client_error(response)
    valid = all(
        set(r) == {"age", "salary", "car_location"}
        and all(isinstance(r[k], float) and math.isfinite(r[k]) for k in ("age", "salary"))
        and r["car_location"] in ("carpark", "street")
        for r in records
    )
    if valid:
        assert ok, response.text
        got = [row["number_of_claims"] for row in response.json()["records"]]
        want = [claims_by_hand(r["age"], r["salary"], r["car_location"]) for r in records]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)


@st.composite
def v2_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """A V2 request for the MLP: sometimes exactly right, otherwise one or more things wrong."""
    rows = draw(st.integers(min_value=0, max_value=4))
    values = draw(st.lists(sane_numbers, min_size=rows * 4, max_size=rows * 4))
    tensor: dict[str, Any] = {"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": values}
    if draw(st.booleans()):
        field = draw(st.sampled_from(["name", "shape", "datatype", "data", "parameters", "drop"]))
        if field == "drop":
            del tensor[draw(st.sampled_from(["name", "shape", "datatype", "data"]))]
        elif field == "datatype":
            tensor["datatype"] = draw(st.sampled_from(DATATYPES))
        elif field == "shape":
            tensor["shape"] = draw(
                st.one_of(
                    st.lists(st.integers(min_value=-2, max_value=2**40), max_size=4),
                    hostile_scalars,
                )
            )
        else:
            tensor[field] = draw(hostile_scalars)
    return {"inputs": [tensor], **draw(st.fixed_dictionaries({}, optional={"id": hostile_scalars}))}


@given(body=v2_tensors())
@EXAMPLES
def test_v2_mlp_requests_answer_right_or_refuse_clearly(
    mixed_server: tuple[RunningServer, Path], body: dict[str, Any]
) -> None:
    server, mlp_path = mixed_server
    response = requests.post(
        f"{server.url}/v2/models/mlp/infer",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    ok = assert_answer_or_client_error(response)
    tensor = body["inputs"][0]
    intact = set(tensor) == {"name", "shape", "datatype", "data"} and tensor["name"] == "x"
    intact = intact and tensor["datatype"] == "FP32" and isinstance(tensor["shape"], list)
    intact = intact and len(tensor["shape"]) == 2 and tensor["shape"][1] == 4 and tensor["shape"][0] >= 1
    valid = intact and isinstance(tensor["data"], list) and len(tensor["data"]) == tensor["shape"][0] * 4
    valid = valid and isinstance(body.get("id", ""), str)  # the spec's id is a string; others are refused
    if valid:
        assert ok, response.text
        x = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        (want,) = ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        answer = response.json()
        np.testing.assert_allclose(answer["outputs"][0]["data"], want.ravel(), rtol=1e-5, atol=1e-5)
        if "id" in body:
            assert answer["id"] == body["id"]


@st.composite
def v2_claims(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A V2 request for the PMML model, and whether it is entirely valid."""
    rows = draw(st.integers(min_value=1, max_value=4))
    fields = {
        "age": ("FP64", draw(st.lists(sane_numbers, min_size=rows, max_size=rows))),
        "salary": ("FP64", draw(st.lists(sane_numbers, min_size=rows, max_size=rows))),
        "car_location": ("BYTES", draw(st.lists(locations, min_size=rows, max_size=rows))),
    }
    inputs = [{"name": n, "shape": [rows], "datatype": d, "data": v} for n, (d, v) in fields.items()]
    valid = True
    if draw(st.booleans()):
        valid = False
        victim = draw(st.sampled_from(inputs))
        change = draw(st.sampled_from(["datatype", "data", "shape", "name", "drop"]))
        if change == "drop":
            inputs.remove(victim)
        elif change == "datatype":
            victim["datatype"] = draw(st.sampled_from([d for d in DATATYPES if d != victim["datatype"]]))
        elif change == "data":
            victim["data"] = draw(st.lists(hostile_scalars, min_size=rows, max_size=rows))
        elif change == "shape":
            victim["shape"] = [draw(st.integers(min_value=0, max_value=10)), 2]
        else:
            victim["name"] = draw(st.text(max_size=8))
    return {"inputs": inputs}, valid


@given(case=v2_claims())
@EXAMPLES
def test_v2_pmml_requests_answer_right_or_refuse_clearly(
    mixed_server: tuple[RunningServer, Path], case: tuple[dict[str, Any], bool]
) -> None:
    server, _ = mixed_server
    body, valid = case
    response = requests.post(f"{server.url}/v2/models/claims/infer", json=body, timeout=30)
    ok = assert_answer_or_client_error(response)
    if valid:
        assert ok, response.text
        fields = {i["name"]: i["data"] for i in body["inputs"]}
        rows = zip(fields["age"], fields["salary"], fields["car_location"], strict=True)
        want = [claims_by_hand(*row) for row in rows]
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], want, rtol=1e-9, atol=1e-6)
