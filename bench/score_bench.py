"""Batch scoring on Spark (``python -m score``), steady-state rows/s against in-process references.

Run with .venv/dev's python after ``bench/build_models.py`` (``make bench`` does both):

    python bench/score_bench.py --models build/bench [--rows 1000000,3000000] [--images 300,900] [--write-docs]

Every Spark figure comes from two input sizes scored end to end, each in a fresh Spark application
(``local-cluster[E,1,1536]``: E executors, one core each, in JVMs apart from the driver), after one
discarded warm-up application. The steady-state rate is the slope (extra rows / extra seconds) of the
scoring job's own time (read, score, write, commit: Spark's action), which the cluster's start-up
does not blur; the start-up and fixed cost is the intercept of the end-to-end wall time, reported
apart, in seconds. References, on the same files:

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
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyspark

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.manifest import read_manifest  # noqa: E402
from runtime.codecs.image import decode_image, image_preprocessing  # noqa: E402
from score.job import Job, run, session  # noqa: E402

SPARK_CONF = {"spark.ui.enabled": "false", "spark.sql.files.maxPartitionBytes": str(16 << 20)}
ROW_GROUP = 100_000
DOC = ROOT / "docs" / "batch.md"
START, END = "<!-- score-bench:start -->", "<!-- score-bench:end -->"
LAYOUTS = ("array", "columns")  # the MLP table: its [N, 32] input as one list<float> column x, or f0 ... f31
LAYOUT_TEXT = {"array": "array column x", "columns": "one column per feature"}
MAPPING: dict[str, dict[str, str] | None] = {"array": None, "columns": {"x": "f*"}}  # --map x='f*': in order


def master(executors: int) -> str:
    return f"local-cluster[{executors},1,1536]"


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
def score_seconds(
    source: Path,
    repository: Path,
    model: str,
    executors: int,
    out: Path,
    keep: list[str],
    mapping: dict[str, str] | None = None,
) -> tuple[float, float]:
    """(end-to-end wall seconds, the scoring job's seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    job = Job(input=str(source), repository=repository, model=model, output=str(out), master=master(executors))
    job.keep, job.conf, job.mapping = keep, SPARK_CONF, mapping or {}
    started = time.perf_counter()
    result = run(job)
    seconds = time.perf_counter() - started
    assert result.errors == 0, f"{result.errors} rows failed"
    return seconds, result.job_seconds


def pandas_seconds(
    source: Path, model: Path, width: int, executors: int, out: Path, layout: str
) -> tuple[float, float]:
    """The plain job: mapInPandas, the features as one numpy array (the array column, a pandas object column
    of arrays, stacked; or the feature columns), onnxruntime, and each row's output vector back as a pandas
    object column of lists (Spark's defaults otherwise)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    spark = session(Job(input="", repository=Path("."), model="", output="", master=master(executors), conf=SPARK_CONF))
    try:
        spark.sparkContext.addFile(str(model))
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

        frame = spark.read.parquet(str(source))
        writing = time.perf_counter()
        frame.mapInPandas(predict, "id long, y array<float>").write.parquet(str(out))
        job = time.perf_counter() - writing
    finally:
        app = spark.sparkContext.applicationId
        spark.stop()
        shutil.rmtree(Path(pyspark.__file__).parent / "work" / app, ignore_errors=True)
    return time.perf_counter() - started, job


def slope(sizes: list[int], timings: list[tuple[float, float]]) -> tuple[float, float]:
    """Steady-state rows/s (from the jobs' own seconds) and the start-up + fixed cost in seconds
    (the end-to-end wall time less the rows at that rate)."""
    (n1, n2), ((w1, j1), (_, j2)) = sizes, timings
    rate = (n2 - n1) / (j2 - j1) if j2 > j1 else float("nan")
    return rate, w1 - n1 / rate


def measure(name: str, sizes: list[int], runner) -> dict:
    timings = [runner(i) for i in range(len(sizes))]
    rate, fixed = slope(sizes, timings)
    print(f"{name}: {timings} -> {rate:,.1f} rows/s, start-up + fixed {fixed:.1f}s", flush=True)
    return {
        "name": name,
        "sizes": sizes,
        "seconds": [w for w, _ in timings],
        "job_seconds": [j for _, j in timings],
        "rows_per_s": rate,
        "startup_s": fixed,
    }


# ---- report ----------------------------------------------------------------------------------------------------
def table_markdown(results: dict) -> str:
    lines = [
        "| workload | configuration | sizes | wall s | job s | steady rows/s | start-up + fixed s | vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload in ("mlp", "mobilenetv2"):
        block = results.get(workload)
        if not block:
            continue
        ref = block["reference_rows_per_s"]
        lines.append(f"| {workload} | {block['reference_name']} | {block['reference_rows']} | | | {ref:,.0f} | | 1 |")
        for row in block["runs"]:
            sizes = " / ".join(f"{n:,}" for n in row["sizes"])
            walls = " / ".join(f"{t:.1f}" for t in row["seconds"])
            jobs = " / ".join(f"{t:.1f}" for t in row["job_seconds"])
            if row["rows_per_s"] > 0:  # NaN when the larger size was not slower: sizes too small for the noise
                rate = f"{row['rows_per_s']:,.0f} | {row['startup_s']:.1f} | {row['rows_per_s'] / ref:.2f}x"
            else:
                rate = "n/a | n/a | n/a (the larger input was not slower: use larger sizes)"
            lines.append(f"| {workload} | {row['name']} | {sizes} | {walls} | {jobs} | {rate} |")
    lines.append("")
    mlp = results.get("mlp", {}).get("runs", [])
    plain = [r for r in mlp if r["name"].startswith("plain")]
    ours = [r for r in mlp if r["name"].startswith("python -m score") and "(A/B)" not in r["name"]]
    if plain and ours and plain[0]["rows_per_s"] > 0 and ours[-1]["rows_per_s"] > 0:
        ratio = ours[-1]["rows_per_s"] / plain[0]["rows_per_s"]
        lines.append(f"`python -m score` ({ours[-1]['name'].split(', ')[1]}) / plain mapInPandas: **{ratio:.2f}x**.")
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
        score_seconds(tables[0], repository, "mlp", executors[0], work / "out", ["id"], features)  # warm-up
        runs = [
            measure(
                f"python -m score, {e} executor(s)",
                rows,
                lambda i, e=e: score_seconds(tables[i], repository, "mlp", e, work / "out", ["id"], features),
            )
            for e in executors
        ]
        runs.append(
            measure(
                f"plain mapInPandas, {max(executors)} executors",
                rows,
                lambda i: pandas_seconds(
                    tables[i], mlp_dir / "model.onnx", width, max(executors), work / "out", layout
                ),
            )
        )
        reference = reference_table(tables[-1], mlp_dir / "model.onnx", width, layout)
        print(f"mlp pyarrow + onnxruntime loop: {reference:,.0f} rows/s", flush=True)
        if not args.skip_ab:  # the same rows in the other layout: what the JVM pays for each
            for table in tables:
                shutil.rmtree(table)
            others = [write_table(work / f"{other}-{n}", n, width, other) for n in rows]
            runs.append(
                measure(
                    f"python -m score, {max(executors)} executors, {LAYOUT_TEXT[other]} (A/B)",
                    rows,
                    lambda i: score_seconds(
                        others[i], repository, "mlp", max(executors), work / "out", ["id"], MAPPING[other]
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
            "runs": runs,
        }

        if args.skip_images:
            raise _Skip
        net_dir = repository / "mobilenetv2" / "1"
        folders = [write_images(work / f"images-{n}", n) for n in images]
        runs = [
            measure(
                f"python -m score, {e} executor(s)",
                images,
                lambda i, e=e: score_seconds(folders[i], repository, "mobilenetv2", e, work / "out", ["path"]),
            )
            for e in executors
        ]
        reference = reference_images(folders[-1], net_dir)
        print(f"mobilenetv2 Pillow + onnxruntime loop: {reference:,.1f} images/s", flush=True)
        results["mobilenetv2"] = {
            "reference_name": "Pillow decode + onnxruntime loop, batches of 64",
            "reference_rows": f"{images[-1]:,}",
            "reference_rows_per_s": reference,
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
