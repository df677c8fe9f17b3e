"""Batch scoring on Spark (``python -m score``), steady-state rows/s against in-process references.

Run with .venv/dev's python after ``bench/build_models.py`` (``make bench`` does both):

    python bench/score_bench.py --models build/bench [--rows 1000000,3000000] [--images 300,900] [--write-docs]

Every Spark figure comes from one Spark application per configuration: a first job on the smaller input
(the Python workers' start, the engine's load, the JVMs' first compiles), then each of two input sizes
twice, alternating. The steady-state rate is the least-squares slope of those jobs' own seconds (read,
score, write, commit: Spark's action) over their rows; the start-up (the application's start and first
job, less its rows at that rate) is reported apart, in seconds. Placements: ``local-cluster[E,1,1536]``
(E executors, one core each, in JVMs apart from the driver, as on a cluster) and ``local[*]`` (one JVM,
a task per core: ``python -m score``'s default master on one machine). Two floors give what Spark costs
for the MLP's table and output with no model: the same ``mapInArrow`` round trip with a Python function
that only slices the input, and the same read and write in the JVM alone. References, on the same files:

* tabular MLP, over a table whose [N, 32] input is one array column x (list<float>, the column
  ``python -m score`` feeds an [N, K] input from by default; ``--layout columns``: one float column
  per feature, f0 ... f31, fed with ``--map x='f*'``): one process reading the parquet with pyarrow and
  running onnxruntime on batches of 10,000 rows (onnxruntime's default threads: every core);
* the same MLP in a plain ``mapInPandas`` job: the features through pandas (the array column as a
  pandas object column of arrays, stacked), onnxruntime per batch, and each row's output vector back
  through a pandas object column;
* for A/B, ``python -m score`` over the same rows in the other layout;
* MobileNetV2: one process decoding each JPEG with Pillow (the server's decoder) and running
  onnxruntime on batches of 64 (default threads).

Results go to BENCH_DIR/score-results.json; ``--write-docs`` puts the table into docs/batch.md
between its ``score-bench`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.manifest import read_manifest  # noqa: E402
from runtime.codecs.image import decode_image, image_preprocessing  # noqa: E402
from score.job import ARROW_UNLIMITED_BYTES, BATCH_ROWS_KEY, Job, run, session, stop  # noqa: E402
from score.plan import DEFAULT_BATCH_ROWS  # noqa: E402

SPARK_CONF = {"spark.ui.enabled": "false", "spark.sql.files.maxPartitionBytes": str(16 << 20)}
ROW_GROUP = 100_000
REFERENCE_PASSES = 3  # the in-process loops: the mean of this many passes
DOC = ROOT / "docs" / "batch.md"
START, END = "<!-- score-bench:start -->", "<!-- score-bench:end -->"
LAYOUTS = ("array", "columns")  # the MLP table: its [N, 32] input as one list<float> column x, or f0 ... f31
LAYOUT_TEXT = {"array": "array column x", "columns": "one column per feature"}
MAPPING: dict[str, dict[str, str] | None] = {"array": None, "columns": {"x": "f*"}}  # --map x='f*': in order


def master(executors: int) -> str:
    return f"local-cluster[{executors},1,1536]"


LOCAL = ("local[*]", "local[*]")  # (label, master): one JVM, a task per core, python -m score's default master


def load() -> float:
    return os.getloadavg()[0]


# ---- inputs ---------------------------------------------------------------------------------------------
def feature_names(width: int) -> list[str]:
    return [f"f{j}" for j in range(width)]


def write_table(path: Path, rows: int, width: int, layout: str = "columns") -> Path:
    """``rows`` random feature rows as pyarrow writes them (its defaults): ``array`` holds them in one
    array column x, ``columns`` in one float column per feature (f0, f1, ...)."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    if layout == "array":
        schema = pa.schema([("id", pa.int64()), ("x", pa.list_(pa.float32()))])
    else:
        schema = pa.schema([("id", pa.int64()), *[(name, pa.float32()) for name in feature_names(width)]])
    with pq.ParquetWriter(path / "part-0.parquet", schema) as w:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            values = rng.standard_normal((n, width), dtype=np.float32)
            if layout == "array":
                offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
                columns = {"x": pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))}
            else:
                columns = {name: values[:, j] for j, name in enumerate(feature_names(width))}
            batch = pa.table({"id": np.arange(start, start + n), **columns}, schema=schema)
            w.write_table(batch, row_group_size=ROW_GROUP)
    return path


def write_images(path: Path, count: int) -> Path:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    base = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    for i in range(count):
        pixels = np.roll(base, i, axis=1) // 2 + rng.integers(0, 128, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path / f"img-{i:05d}.jpg", quality=90)
    return path


# ---- references ---------------------------------------------------------------------------------------------
def ort_session(model: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def reference_table(table: Path, model: Path, width: int, layout: str) -> float:
    """The same parquet read with pyarrow, 10,000 rows per onnxruntime call."""
    session = ort_session(model)
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    rows = 0
    features = ["x"] if layout == "array" else feature_names(width)
    for batch in pq.ParquetFile(table / "part-0.parquet").iter_batches(batch_size=10_000, columns=features):
        if layout == "array":
            x = batch.column(0).flatten().to_numpy().reshape(-1, width)
        else:
            x = np.column_stack([column.to_numpy() for column in batch.columns])
        session.run(None, {name: x})
        rows += batch.num_rows
    return rows / (time.perf_counter() - started)


def reference_images(folder: Path, version_dir: Path) -> float:
    manifest = read_manifest(version_dir)
    spec = image_preprocessing(manifest)
    session = ort_session(version_dir / manifest.model_file)
    files = sorted(folder.glob("*.jpg"))
    started = time.perf_counter()
    for i in range(0, len(files), 64):
        batch = np.stack([decode_image(f.read_bytes(), spec, 40_000_000) for f in files[i : i + 64]])
        session.run(None, {spec.input: batch})
    return len(files) / (time.perf_counter() - started)


# ---- Spark runs -----------------------------------------------------------------------------------------------
ROUNDS = 2  # each size scored this many times, alternating, in one warm application


@contextmanager
def application(url: str) -> Iterator[Any]:
    """A Spark application on master ``url``, stopped (and its work directory removed) after."""
    spark = session(Job(input="", repository=Path("."), model="", output="", master=url, conf=SPARK_CONF))
    try:
        yield spark
    finally:
        stop(spark)


def timed_write(frame: Any, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    frame.write.parquet(str(out))
    return time.perf_counter() - started


def score_job(
    spark: Any, source: Path, repository: Path, model: str, out: Path, keep: list[str], mapping: dict[str, str] | None
) -> float:
    """``python -m score``'s own ``run`` in the open application: the scoring job's seconds."""
    shutil.rmtree(out, ignore_errors=True)
    job = Job(input=str(source), repository=repository, model=model, output=str(out), master="(open)")
    job.keep, job.conf, job.mapping = keep, SPARK_CONF, mapping or {}
    result = run(job, spark)
    assert result.errors == 0, f"{result.errors} rows failed"
    return result.job_seconds


def pandas_job(spark: Any, source: Path, model: Path, width: int, out: Path, layout: str) -> float:
    """The plain job: mapInPandas, the features as one numpy array (the array column, a pandas object column
    of arrays, stacked; or the feature columns), onnxruntime, and each row's output vector back as a pandas
    object column of lists (Spark's defaults otherwise)."""
    spark.sparkContext.addFile(str(model))  # the same file again is a no-op
    name = model.name
    features = feature_names(width)

    def predict(frames):
        import onnxruntime as ort
        import pandas as pd
        from pyspark import SparkFiles

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        sess = ort.InferenceSession(SparkFiles.get(name), options, providers=["CPUExecutionProvider"])
        input_name = sess.get_inputs()[0].name
        for frame in frames:
            if layout == "array":
                x = np.stack(frame["x"].to_numpy()).astype(np.float32, copy=False)
            else:
                x = frame[features].to_numpy(dtype=np.float32)
            y = sess.run(None, {input_name: x})[0]
            yield pd.DataFrame({"id": frame["id"], "y": list(y)})

    return timed_write(spark.read.parquet(str(source)).mapInPandas(predict, "id long, y array<float>"), out)


def floor_job(spark: Any, source: Path, out: Path, outputs: int, python: bool) -> float:
    """What Spark costs before any model: the array table's read and a write of ``python -m score``'s output
    shape (id, a list<float> of ``outputs`` values, a null error string). ``python``: through ``mapInArrow``
    as ``python -m score`` goes (the Arrow batches to a Python worker and back) with a function that only
    slices the input, the least any Python scorer on Spark can cost; otherwise in the JVM alone."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(source)).select("id", "x")
    if python:  # the Arrow settings python -m score runs a table with (score.job.scoring_conf)
        spark.conf.set(BATCH_ROWS_KEY, str(DEFAULT_BATCH_ROWS))
        spark.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", ARROW_UNLIMITED_BYTES)

        def identity(batches):
            import pyarrow.compute as pc

            for batch in batches:
                columns = [
                    batch.column(0),
                    pc.list_slice(batch.column(1), 0, outputs),
                    pa.nulls(batch.num_rows, pa.string()),
                ]
                yield pa.RecordBatch.from_arrays(columns, names=["id", "y", "error"])

        scored = frame.mapInArrow(identity, "id long, y array<float>, error string")
    else:
        scored = frame.select("id", F.slice("x", 1, outputs).alias("y"), F.lit(None).cast("string").alias("error"))
    return timed_write(scored, out)


def slope(timings: list[tuple[int, float]]) -> tuple[float, float]:
    """Steady-state rows/s (the least-squares slope of job seconds over rows) and the jobs' fixed seconds."""
    rows = np.array([n for n, _ in timings], dtype=float)
    seconds = np.array([t for _, t in timings])
    per_row, fixed = np.polyfit(rows, seconds, 1)
    return (1 / per_row if per_row > 0 else float("nan")), float(fixed)


def measure(
    kind: str, name: str, sizes: list[int], placement: tuple[str, str], job: Callable[[Any, int], float]
) -> dict:
    """``job(spark, i)`` scores input ``i`` (of ``sizes``) and returns the job's seconds. One application: a
    first job on the smallest input (the Python workers' and the engine's start, the JVM's first compiles),
    then each size ``ROUNDS`` times, alternating. The steady rate is the slope over those warm jobs; the
    start-up is the application's start and first job, less the first job's rows at that rate."""
    started = time.perf_counter()
    label, url = placement
    name = f"{name}, {label}"
    with application(url) as spark:
        job(spark, 0)
        first = time.perf_counter() - started
        timings = [(sizes[i], job(spark, i)) for _ in range(ROUNDS) for i in range(len(sizes))]
    rate, fixed = slope(timings)
    startup = first - sizes[0] / rate if rate > 0 else float("nan")
    print(f"{name}: {timings} -> {rate:,.1f} rows/s, start-up {startup:.1f}s", flush=True)
    return {
        "name": name,
        "kind": kind,  # score, plain, floor, jvm or ab
        "placement": label,
        "sizes": sizes,
        "job_seconds": [t for _, t in timings],
        "rows_per_s": rate,
        "job_fixed_s": fixed,
        "startup_s": startup,
    }


# ---- report ----------------------------------------------------------------------------------------------------
def table_markdown(results: dict) -> str:
    lines = [
        f"| workload | configuration | sizes | job s (each size {ROUNDS} times) | steady rows/s | start-up s "
        "| vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in ("mlp", "mobilenetv2"):
        block = results.get(workload)
        if not block:
            continue
        ref = block["reference_rows_per_s"]
        passes = ", ".join(f"{v:,.0f}" for v in block.get("reference_passes", []))
        name, size = block["reference_name"], block["reference_rows"]
        lines.append(f"| {workload} | {name} | {size} | | {ref:,.0f} (mean of {passes}) | | 1 |")
        for row in block["runs"]:
            sizes = " / ".join(f"{n:,}" for n in row["sizes"])
            jobs = " / ".join(f"{t:.1f}" for t in row["job_seconds"])
            if row["rows_per_s"] > 0:  # NaN when the larger size was not slower: sizes too small for the noise
                rate = f"{row['rows_per_s']:,.0f} | {row['startup_s']:.1f} | {row['rows_per_s'] / ref:.2f}x"
            else:
                rate = "n/a | n/a | n/a (the larger input was not slower: use larger sizes)"
            lines.append(f"| {workload} | {row['name']} | {sizes} | {jobs} | {rate} |")
    lines.append("")
    mlp = results.get("mlp", {}).get("runs", [])
    for placement in dict.fromkeys(r["placement"] for r in mlp):
        rate = {r["kind"]: r["rows_per_s"] for r in mlp if r["placement"] == placement}
        ours = rate.get("score", float("nan"))
        for kind, what in (("plain", "plain mapInPandas"), ("floor", "the floor with no model")):
            if rate.get(kind, 0) > 0 and ours > 0:
                lines.append(f"- `python -m score` / {what}, {placement}: **{ours / rate[kind]:.2f}x**")
    lines.append("")
    lines.append(
        f"Measured {results['when']} on {os.cpu_count()} cores; load average {results['load_start']:.1f} at the start, "
        f"{results['load_end']:.1f} at the end (the machine is shared). Targets: MLP at least 0.25x the pyarrow + "
        "onnxruntime loop and at least 2x the plain mapInPandas job; MobileNetV2 at least 0.6x the Pillow + "
        "onnxruntime loop."
    )
    return "\n".join(lines)


class _Skip(Exception):
    """--skip-images: the table part is done."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="bench/build_models.py's output directory")
    parser.add_argument("--rows", default="1000000,3000000", help="two table sizes")
    parser.add_argument("--images", default="300,900", help="two image-folder sizes")
    parser.add_argument("--executors", default="1,2")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="array",
        help="the MLP table: one array column x (default) or one column per feature",
    )
    parser.add_argument("--skip-ab", action="store_true", help="skip the MLP run over the other layout")
    parser.add_argument("--skip-images", action="store_true", help="score the table only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    repository = args.models / "repo"
    rows = [int(v) for v in args.rows.split(",")]
    images = [int(v) for v in args.images.split(",")]
    executors = [int(v) for v in args.executors.split(",")]
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_start": load()}
    work = Path(tempfile.mkdtemp(prefix="score-bench-", dir=args.models))
    try:
        mlp_dir = repository / "mlp" / "1"
        width = read_manifest(mlp_dir).inputs[0].shape[1]
        layout = args.layout
        other = next(x for x in LAYOUTS if x != layout)
        tables = [write_table(work / f"table-{n}", n, width, layout) for n in rows]
        features = MAPPING[layout]
        outputs = read_manifest(mlp_dir).outputs[0].shape[-1]
        with application(master(1)):  # a process's first application also starts Spark's gateway JVM: not measured
            pass
        spread = [(f"{e} executor(s)", master(e)) for e in executors]
        widest = spread[-1]

        def score_mlp(spark: Any, i: int) -> float:
            return score_job(spark, tables[i], repository, "mlp", work / "out", ["id"], features)

        def plain_mlp(spark: Any, i: int) -> float:
            return pandas_job(spark, tables[i], mlp_dir / "model.onnx", width, work / "out", layout)

        runs = [measure("score", "python -m score", rows, where, score_mlp) for where in [*spread, LOCAL]]
        runs += [measure("plain", "plain mapInPandas", rows, where, plain_mlp) for where in (widest, LOCAL)]
        if layout == "array":  # the floors: Spark's own cost for this table and output, no model
            runs += [
                measure(
                    "floor",
                    "floor: the same read, Arrow round trip and write, no model",
                    rows,
                    where,
                    lambda spark, i: floor_job(spark, tables[i], work / "out", outputs, python=True),
                )
                for where in (widest, LOCAL)
            ]
            runs.append(
                measure(
                    "jvm",
                    "floor: the same read and write in the JVM alone",
                    rows,
                    widest,
                    lambda spark, i: floor_job(spark, tables[i], work / "out", outputs, python=False),
                )
            )
        passes = [reference_table(tables[-1], mlp_dir / "model.onnx", width, layout) for _ in range(REFERENCE_PASSES)]
        reference = float(np.mean(passes))
        print(f"mlp pyarrow + onnxruntime loop: {reference:,.0f} rows/s ({passes})", flush=True)
        if not args.skip_ab:  # the same rows in the other layout: what the JVM pays for each
            for table in tables:
                shutil.rmtree(table)
            others = [write_table(work / f"{other}-{n}", n, width, other) for n in rows]
            runs.append(
                measure(
                    "ab",
                    f"python -m score, {LAYOUT_TEXT[other]} (A/B)",
                    rows,
                    widest,
                    lambda spark, i: score_job(
                        spark, others[i], repository, "mlp", work / "out", ["id"], MAPPING[other]
                    ),
                )
            )
            for table in others:
                shutil.rmtree(table)
        results["mlp"] = {
            "layout": LAYOUT_TEXT[layout],
            "reference_name": f"pyarrow + onnxruntime loop, batches of 10,000 ({LAYOUT_TEXT[layout]})",
            "reference_rows": f"{rows[-1]:,}",
            "reference_rows_per_s": reference,
            "reference_passes": passes,
            "runs": runs,
        }

        if args.skip_images:
            raise _Skip
        net_dir = repository / "mobilenetv2" / "1"
        folders = [write_images(work / f"images-{n}", n) for n in images]
        runs = [
            measure(
                "score",
                "python -m score",
                images,
                where,
                lambda spark, i: score_job(spark, folders[i], repository, "mobilenetv2", work / "out", ["path"], None),
            )
            for where in [*spread, LOCAL]
        ]
        passes = [reference_images(folders[-1], net_dir) for _ in range(REFERENCE_PASSES)]
        reference = float(np.mean(passes))
        print(f"mobilenetv2 Pillow + onnxruntime loop: {reference:,.1f} images/s ({passes})", flush=True)
        results["mobilenetv2"] = {
            "reference_name": "Pillow decode + onnxruntime loop, batches of 64",
            "reference_rows": f"{images[-1]:,}",
            "reference_rows_per_s": reference,
            "reference_passes": passes,
            "runs": runs,
        }
    except _Skip:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = load()
    (args.models / "score-results.json").write_text(json.dumps(results, indent=2))
    markdown = table_markdown(results)
    print(markdown)
    if args.write_docs:
        text = DOC.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        DOC.write_text(f"{head}{START}\n{markdown}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
