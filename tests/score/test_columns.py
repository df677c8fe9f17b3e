"""An ``[N, K]`` input fed from K numeric columns, one per feature (``--map INPUT=f0,f1,...`` or a glob):
every row equals onnxruntime run directly on that row, a null feature scores as the server scores it,
the Parquet output skips dictionary encoding for float scores, the caller's session settings come
back unchanged, and a missing or surplus column is a usage error that names it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
import requests

from bundle.manifest import read_manifest
from score.job import Job, ScoreError, run
from score.plan import PlanError, build, expand_columns
from tests.score.conftest import NULL_FEATURE, ROWS, Built, Table
from tests.support.server import RunningServer

FEATURES = [f"f{j}" for j in range(8)]


def _run(spark, built: Built, table: Table, out: Path, mapping: str):
    job = Job(input=str(table.path), repository=built.repository, model="tabular-regressor", output=str(out))
    job.keep, job.mapping = ["id"], {"features": mapping}
    return run(job, spark=spark)


def test_feature_columns_equal_onnxruntime_per_row(
    spark, built: Built, table: Table, server: RunningServer, tmp_path: Path
) -> None:
    key = "spark.sql.execution.arrow.maxBytesPerBatch"
    before = spark.conf.get(key)
    result = _run(spark, built, table, tmp_path / "listed", ",".join(FEATURES))
    assert spark.conf.get(key) == before  # the job's settings do not outlive it in the caller's session
    assert result.rows == ROWS and result.errors == 0
    got = pq.read_table(tmp_path / "listed").sort_by("id")
    assert got["id"].to_pylist() == list(range(ROWS))
    version_dir = built.repository / "tabular-regressor" / "1"
    manifest = read_manifest(version_dir)
    (spec,) = manifest.outputs
    predictions = np.array(got[spec.name].to_pylist(), dtype=float)

    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = manifest.inputs[0].name
    row_null, _ = NULL_FEATURE
    expected = np.array(
        [session.run(None, {name: table.features[i : i + 1].astype(np.float32)})[0][0, 0] for i in range(ROWS)]
    )
    good = [i for i in range(ROWS) if i != row_null]
    np.testing.assert_allclose(predictions[good], expected[good], rtol=1e-5, atol=1e-6)

    # A null feature is scored as the server scores a null element (NaN), not refused.
    cells = [None if j == NULL_FEATURE[1] else v for j, v in enumerate(table.features[row_null].tolist())]
    answer = requests.post(
        f"{server.url}/api/models/tabular-regressor/predict", json={"inputs": {name: [cells]}}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][spec.name][0][0] is None and math.isnan(predictions[row_null])

    # Float scores are written without a dictionary (continuous values: it never pays).
    part = next((tmp_path / "listed").glob("part-*.parquet"))
    metadata = pq.ParquetFile(part).metadata.row_group(0)
    chunks = {metadata.column(i).path_in_schema: metadata.column(i) for i in range(metadata.num_columns)}
    assert not chunks[spec.name].has_dictionary_page

    # The glob form names the same columns, in the table's order: the same answers.
    _run(spark, built, table, tmp_path / "glob", "f?")
    again = pq.read_table(tmp_path / "glob").sort_by("id")
    np.testing.assert_array_equal(np.array(again[spec.name].to_pylist(), dtype=float), predictions)


def test_feature_columns_usage_errors_name_the_column(spark, built: Built, table: Table, tmp_path: Path) -> None:
    out = tmp_path / "o"
    with pytest.raises(ScoreError) as caught:
        _run(spark, built, table, out, "f0,f1,f2,nope,f4,f5,f6,f7")
    assert caught.value.status == 2
    assert "input 'features'" in str(caught.value) and "needs a column 'nope'" in str(caught.value)
    with pytest.raises(ScoreError, match=r"takes 8 values per row, and 2 columns were named"):
        _run(spark, built, table, out, "f0,f1")
    with pytest.raises(ScoreError, match=r"no column matches 'g\*'"):
        _run(spark, built, table, out, "g*")
    with pytest.raises(ScoreError, match=r"column 'car_location' must be a numeric column, not string"):
        _run(spark, built, table, out, "f0,f1,f2,f3,f4,f5,f6,car_location")
    with pytest.raises(ScoreError, match=r"column 'features' must be a numeric column, not array"):
        _run(spark, built, table, out, "f*")  # the glob also matches the array column 'features'
    assert not out.exists()


def test_column_lists_and_globs_expand_in_order(built: Built) -> None:
    columns = {"id": "numeric", "b2": "numeric", "a1": "numeric", "b1": "numeric", "s": "string"}
    assert expand_columns("b*", columns) == ["b2", "b1"]  # a glob keeps the table's order
    assert expand_columns("a1,b*", columns) == ["a1", "b2", "b1"]  # a list keeps its own
    with pytest.raises(PlanError, match="'b2' is named twice"):
        expand_columns("b2,b*", columns)
    manifest = read_manifest(built.repository / "claims" / "1")
    with pytest.raises(PlanError, match="only a numeric \\[N, K\\] input can be fed from several columns"):
        build(
            manifest,
            {**columns, "age": "numeric", "salary": "numeric", "car_location": "string"},
            archive="",
            mapping={"age": "a1,b1"},
            keep=[],
            batch_rows=None,
            fail_on_error=False,
            image_input=None,
        )
