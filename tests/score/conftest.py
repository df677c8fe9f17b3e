"""Real Spark for the batch-scoring tests: ``local-cluster[2,1,1024]``, i.e. a standalone master and
two workers whose executors are JVMs apart from the driver, each with Python workers of its own, so
the bundle really travels through ``addArchive`` and the code through ``addPyFile``.

The bundles are real: the example models built by ``examples/make_examples.py`` and converted by the
converter (the image classifier ``colour-classifier`` and ``tabular-regressor``), and the hand-written
claims PMML converted the same way. One table of 10,400 rows holds the columns of both tabular models
plus, on rows the tests name, values each model must refuse.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest

from convert.formats import ConvertOptions
from convert.pipeline import convert_model
from score.job import Job, session
from tests.support.server import ROOT, RunningServer, run_server

EXAMPLES = ROOT / "examples"
LABELS = [line.strip() for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line.strip()]
CLAIMS_PMML = ROOT / "tests" / "pmml" / "data" / "claims_regression.pmml"
MASTER = "local-cluster[2,1,1024]"
# Loopback only, no UI, and a bad task fails its job at once instead of being retried 3 more times.
SPARK_CONF = {"spark.ui.enabled": "false", "spark.task.maxFailures": "1"}
ROWS = 10_400
FILES = 8  # one parquet file each: at least 8 tasks for 2 executors

NULL_FEATURE = (300, 5)  # row, feature: f5 is null in row 300 of the one-column-per-feature copy
# Rows each model must refuse, and why (checked against the server's 400 for the same row).
BAD_FEATURES = {17: "seven values", 4242: "null array", 9001: "a null inside"}
BAD_CLAIMS = {23: "null age", 5000: "car_location not allowed", 10_399: "null car_location"}


@dataclass
class Built:
    repository: Path
    build: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = Path(tmp_path_factory.mktemp("score_models"))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_examples.py"), str(work / "build")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    repository = work / "models"
    build = work / "build"
    convert_model(
        build / "colour_classifier.keras", repository, "colour-classifier", options=ConvertOptions(labels=LABELS)
    )
    convert_model(build / "tabular_regressor.keras", repository, "tabular-regressor")
    convert_model(CLAIMS_PMML, repository, "claims")
    return Built(repository, build)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local-cluster session for the in-process tests."""
    spark = session(Job(input="", repository=Path("."), model="", output="", master=MASTER, conf=SPARK_CONF))
    yield spark
    spark.stop()


@pytest.fixture(scope="session", autouse=True)
def _spark_work_dirs() -> Iterator[None]:
    """local-cluster workers keep each application's files under $SPARK_HOME/work (here: inside the
    virtualenv); the applications this run adds are removed after it."""
    work = Path(pyspark.__file__).parent / "work"
    before = set(work.iterdir()) if work.is_dir() else set()
    yield
    for app in (set(work.iterdir()) if work.is_dir() else set()) - before:
        shutil.rmtree(app, ignore_errors=True)


@pytest.fixture(scope="session")
def server(built: Built) -> Iterator[RunningServer]:
    with run_server(built.repository, log_dir=built.repository.parent) as running:
        yield running


@dataclass
class Table:
    path: Path
    features: np.ndarray  # [ROWS, 8] float64 (bad rows as written: see ``features_cell``)
    claims: list[dict]  # one record per row, None for a missing value


def features_cell(features: np.ndarray, row: int) -> list | None:
    return {17: features[row, :7].tolist(), 4242: None, 9001: [*features[row, :3].tolist(), None, 1, 2, 3, 4]}.get(
        row, features[row].tolist()
    )


def _feature_column(features: np.ndarray, j: int) -> list[float | None]:
    values: list[float | None] = features[:, j].tolist()
    if j == NULL_FEATURE[1]:
        values[NULL_FEATURE[0]] = None
    return values


@pytest.fixture(scope="session")
def table(tmp_path_factory: pytest.TempPathFactory) -> Table:
    rng = np.random.default_rng(11)
    features = rng.uniform(-1, 1, (ROWS, 8))
    ages = rng.integers(18, 80, ROWS).astype(float)
    salaries = rng.uniform(1000, 9000, ROWS).round(2)
    places = rng.choice(["carpark", "street"], ROWS)
    claims = [
        {"age": float(a), "salary": float(s), "car_location": str(p)}
        for a, s, p in zip(ages, salaries, places, strict=True)
    ]
    claims[23]["age"] = None
    claims[5000]["car_location"] = "garage"
    claims[10_399]["car_location"] = None
    path = Path(tmp_path_factory.mktemp("score_table")) / "table"
    path.mkdir()
    frame = pa.table(
        {
            "id": pa.array(np.arange(ROWS), pa.int64()),
            "features": pa.array([features_cell(features, i) for i in range(ROWS)], pa.list_(pa.float64())),
            "age": pa.array([c["age"] for c in claims], pa.float64()),
            "salary": pa.array([c["salary"] for c in claims], pa.float64()),
            "car_location": pa.array([c["car_location"] for c in claims], pa.string()),
            # The same features one column each (f0 ... f7), as tables usually hold them.
            **{f"f{j}": pa.array(_feature_column(features, j), pa.float64()) for j in range(features.shape[1])},
        }
    )
    step = ROWS // FILES
    for i in range(FILES):
        pq.write_table(frame.slice(i * step, step if i < FILES - 1 else ROWS - i * step), path / f"part-{i}.parquet")
    return Table(path, features, claims)
