"""A 10,400-row parquet table scored on Spark through an ONNX bundle and a PMML bundle: every row
equals the engine run directly on that row, a sample equals the HTTP server's answer, bad rows carry
the server's own 400 text and lose nothing, and --fail-on-error stops the job with no output."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
import requests

from bundle.manifest import read_manifest
from score.job import Job, ScoreError, run
from tests.score.conftest import BAD_CLAIMS, FILES, ROWS, Built, Table, features_cell
from tests.support.server import RunningServer

SAMPLE = [0, 1, 2, 999, 5001, 10_398]
PYPMML_LOOP = """
import json, sys
from pypmml import Model
model = Model.fromFile(sys.argv[1])
records = json.load(open(sys.argv[2]))
answers = [dict(model.predict(record)) for record in records]
json.dump(answers, open(sys.argv[3], "w"), default=str)
"""


def pypmml_row_by_row(pmml: Path, records: list[dict], work: Path) -> list[dict]:
    """``pypmml.Model.predict`` called once per record, as its own documentation shows."""
    (work / "records.json").write_text(json.dumps(records))
    command = [sys.executable, "-c", PYPMML_LOOP, str(pmml), str(work / "records.json"), str(work / "answers.json")]
    subprocess.run(command, check=True, timeout=600)
    return json.loads((work / "answers.json").read_text())


def _errors(table) -> dict[int, str]:
    return {i: e for i, e in enumerate(table["error"].to_pylist()) if e is not None}


def _check_workers(result) -> None:
    """Each Python worker loaded the engine once, in executor processes, and reused it across tasks."""
    assert result.worker_pids, "no engine load was reported"
    assert os.getpid() not in result.worker_pids  # not in the driver
    assert result.engine_loads == len(result.worker_pids)  # once per worker process
    assert result.engine_loads < FILES  # fewer loads than tasks: reused


def test_onnx_table_equals_onnxruntime_and_server(
    spark, built: Built, table: Table, server: RunningServer, tmp_path: Path
) -> None:
    out = tmp_path / "scored"
    job = Job(input=str(table.path), repository=built.repository, model="tabular-regressor", output=str(out))
    job.keep = ["id"]
    result = run(job, spark=spark)
    assert (out / "_SUCCESS").is_file()
    got = pq.read_table(out).sort_by("id")
    assert got.num_rows == ROWS and got["id"].to_pylist() == list(range(ROWS))  # nothing lost
    assert result.rows == ROWS and result.errors == 2
    _check_workers(result)

    version_dir = built.repository / "tabular-regressor" / "1"
    manifest = read_manifest(version_dir)
    (spec,) = manifest.outputs
    assert got.column_names == ["id", spec.name, "error"]
    predictions = got[spec.name].to_pylist()
    errors = _errors(got)
    assert set(errors) == {17, 4242}
    assert predictions[17] is None and predictions[4242] is None

    # Every good row equals onnxruntime run directly on that one row.
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = manifest.inputs[0].name
    expected = np.array(
        [session.run(None, {name: table.features[i : i + 1].astype(np.float32)})[0][0, 0] for i in range(ROWS)]
    )
    good = [i for i in range(ROWS) if i not in (17, 4242, 9001)]
    np.testing.assert_allclose(np.array(predictions, dtype=float)[good], expected[good], rtol=1e-5, atol=1e-6)

    # A sample, the bad rows and the row with a null inside equal the server's answers for the same rows.
    url = f"{server.url}/api/models/tabular-regressor/predict"
    for row in [*SAMPLE, 17, 4242, 9001]:
        answer = requests.post(url, json={"inputs": {name: [features_cell(table.features, row)]}}, timeout=30)
        if row in errors:
            assert answer.status_code == 400
            assert answer.json()["error"] == errors[row]
        else:
            assert answer.status_code == 200, answer.text
            served = answer.json()["outputs"][spec.name][0][0]
            if served is None:  # JSON null for NaN: the server scores a null element as NaN too
                assert row == 9001 and math.isnan(predictions[row])
            else:
                assert predictions[row] == pytest.approx(served, rel=1e-5, abs=1e-6)
    assert "input 'features' has shape [1, 7]" in errors[17]


def test_pmml_table_equals_pypmml_row_by_row_and_server(
    spark, built: Built, table: Table, server: RunningServer, tmp_path: Path
) -> None:
    out = tmp_path / "scored"
    result = run(
        Job(input=str(table.path), repository=built.repository, model="claims", output=str(out), keep=["id"]),
        spark=spark,
    )
    got = pq.read_table(out).sort_by("id")
    assert got.num_rows == ROWS and got["id"].to_pylist() == list(range(ROWS))
    assert result.rows == ROWS and result.errors == len(BAD_CLAIMS)
    _check_workers(result)
    errors = _errors(got)
    assert set(errors) == set(BAD_CLAIMS)
    manifest = read_manifest(built.repository / "claims" / "1")
    target = manifest.outputs[0]
    assert target.name == "number_of_claims"
    predictions = got[target.name].to_pylist()
    assert all(predictions[i] is None for i in BAD_CLAIMS)

    # pypmml, one row at a time, on every good row (in a process of its own: a JPype JVM and
    # PySpark's py4j in one interpreter crash it at exit).
    good = [i for i in range(ROWS) if i not in BAD_CLAIMS]
    expected = pypmml_row_by_row(
        built.repository / "claims" / "1" / "model.pmml", [table.claims[i] for i in good], tmp_path
    )
    source = target.source_name or target.name
    for i, answer in zip(good, expected, strict=True):
        assert predictions[i] == pytest.approx(answer[source], rel=1e-12), i

    url = f"{server.url}/api/models/claims/predict"
    for row in [*SAMPLE, *BAD_CLAIMS]:
        answer = requests.post(url, json=[table.claims[row]], timeout=30)
        if row in BAD_CLAIMS:
            assert answer.status_code == 400
            assert answer.json()["error"] == errors[row]
        else:
            assert answer.status_code == 200, answer.text
            assert predictions[row] == pytest.approx(answer.json()["records"][0][target.name], rel=1e-12)
    assert "'garage'" in errors[5000] and "carpark, street" in errors[5000]


def test_fail_on_error_stops_the_job_and_leaves_no_result(spark, built: Built, table: Table, tmp_path: Path) -> None:
    out = tmp_path / "scored"
    job = Job(input=str(table.path), repository=built.repository, model="claims", output=str(out), keep=["id"])
    job.fail_on_error = True
    with pytest.raises(ScoreError) as caught:
        run(job, spark=spark)
    assert caught.value.status == 1
    message = str(caught.value)
    assert message.startswith("stopped at the first bad row (--fail-on-error): row id=")
    assert any(f"row id={row}:" in message for row in BAD_CLAIMS), message
    assert not (out / "_SUCCESS").exists()
    assert not list(out.glob("part-*")) if out.exists() else True


def test_usage_errors_name_the_column(spark, built: Built, table: Table, tmp_path: Path) -> None:
    job = Job(input=str(table.path), repository=built.repository, model="tabular-regressor", output=str(tmp_path / "o"))
    job.mapping = {"features": "nope"}
    with pytest.raises(ScoreError) as caught:
        run(job, spark=spark)
    assert caught.value.status == 2
    assert "input 'features' needs a column 'nope'" in str(caught.value)
    assert str(table.path) in str(caught.value)
    job = Job(input=str(table.path), repository=built.repository, model="claims", output=str(tmp_path / "o"))
    job.mapping = {"age": "features"}
    with pytest.raises(ScoreError, match=r"column 'features' .* must hold one value per row"):
        run(job, spark=spark)
    with pytest.raises(ScoreError, match="no model 'missing'"):
        run(Job(input=str(table.path), repository=built.repository, model="missing", output=str(tmp_path / "o")))


def test_csv_in_json_out(spark, built: Built, table: Table, tmp_path: Path) -> None:
    """A CSV table (header, inferred types) scored into JSON lines: the same answers as the parquet run
    would give, and the bad row explained the same way."""
    rows = [0, 1, 2, 5000, 77]
    source = tmp_path / "claims.csv"
    lines = ["id,age,salary,car_location"] + [
        f"{i},{table.claims[i]['age']},{table.claims[i]['salary']},{table.claims[i]['car_location']}" for i in rows
    ]
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.json"
    result = run(
        Job(input=str(source), repository=built.repository, model="claims", output=str(out), keep=["id"]), spark=spark
    )
    assert result.rows == len(rows) and result.errors == 1
    got = {}
    for part in out.glob("part-*.json"):
        for line in part.read_text().splitlines():
            record = json.loads(line)
            got[record["id"]] = record
    assert set(got) == set(rows)
    assert "'garage' is not one of carpark, street" in got[5000]["error"]
    assert "number_of_claims" not in got[5000]  # Spark's JSON writer leaves nulls out
    for i in (0, 1, 2, 77):
        claim = table.claims[i]
        by_hand = 132.37 + 7.1 * claim["age"] + 0.01 * claim["salary"]
        by_hand += {"carpark": 41.1, "street": 325.03}[claim["car_location"]]
        assert got[i]["number_of_claims"] == pytest.approx(by_hand, rel=1e-9)
        assert "error" not in got[i]
