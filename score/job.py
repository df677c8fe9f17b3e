"""The driver: find the bundle, plan the columns, ship the bundle and the code, run, commit the output.

What Spark does, Spark does: it partitions and schedules the input, retries failed tasks, and commits
the output with its file output committer (task files under ``_temporary``, moved into place and
``_SUCCESS`` written only when every task succeeded), so a failed job never leaves a result that
looks complete. This module only wires the server's engine into ``DataFrame.mapInArrow``:

* the bundle (the version directory's files) goes to every executor as one archive through
  ``SparkContext.addArchive``: a cluster needs no shared filesystem for it;
* ``score``, ``runtime`` and ``bundle`` go as one zip through ``addPyFile``, so the executors' Python
  environment only needs the third-party packages (onnxruntime or pypmml, numpy, pillow, pyarrow);
* Arrow batches hold ``--batch-rows`` rows (``spark.sql.execution.arrow.maxRecordsPerBatch``), and
  the few session settings that batch scoring needs (``scoring_conf``) hold for the job only.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from bundle.datatypes import Datatype
from bundle.manifest import MODEL_FILES, Manifest, read_manifest
from runtime.codecs.image import image_preprocessing
from runtime.errors import ModelLoadError
from runtime.repository import scan
from runtime.settings import Settings
from score import plan as planning
from score import worker

INPUT_FORMATS = ("parquet", "csv", "json", "images")
OUTPUT_FORMATS = ("parquet", "csv", "json")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PROJECT = Path(__file__).resolve().parents[1]
SHIPPED_PACKAGES = ("score", "runtime", "bundle")
# Spark SQL has no unsigned integers and no half floats: such outputs widen to the next type that holds them.
SPARK_WIDER = {
    pa.uint8(): pa.int16(),
    pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(),
    pa.uint64(): pa.int64(),
    pa.float16(): pa.float32(),
}


class ScoreError(Exception):
    """A failure to report as one line (exit status 1 for a failed job, 2 for a usage error)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    input: str
    repository: Path
    model: str
    output: str
    version: str | None = None
    master: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    keep: list[str] | None = None
    batch_rows: int | None = None
    fail_on_error: bool = False
    overwrite: bool = False
    conf: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass
class Result:
    rows: int
    errors: int
    engine_loads: int
    worker_pids: set[int]
    seconds: float  # everything, the Spark session's start included when run() made it
    job_seconds: float  # the scoring job alone: read, score, write and commit
    output: str
    model: str
    version: str


# ---- the bundle ---------------------------------------------------------------------------------------
def resolve_bundle(repository: Path, model: str, version: str | None) -> tuple[Path, Manifest]:
    """The version directory (highest unless ``version``) and its manifest (derived when absent)."""
    try:
        versions = scan(Path(repository), (model,))[model]
    except ModelLoadError as exc:
        raise ScoreError(str(exc)) from None
    if version is None:
        version_dir = versions[0]
    else:
        version_dir = next((v for v in versions if v.name == str(version)), None)
        if version_dir is None:
            have = ", ".join(v.name for v in versions)
            raise ScoreError(f"{repository}/{model}: no version {version} (versions: {have})")
    try:
        manifest = read_manifest(version_dir)
    except ValueError as exc:
        raise ScoreError(str(exc)) from None
    if manifest is None:  # a bare model file: let the engine describe it, as the server does
        from runtime.engines import EngineOptions, load_engine

        fmt = next((f for f, name in MODEL_FILES.items() if (version_dir / name).is_file()), None)
        if fmt is None:
            raise ScoreError(f"{version_dir}: no model file ({' or '.join(MODEL_FILES.values())}) and no manifest")
        try:
            engine = load_engine(fmt, version_dir, None, EngineOptions(warmup=False))
        except ModelLoadError as exc:
            raise ScoreError(str(exc)) from None
        manifest = engine.manifest
        engine.close()
    manifest.name, manifest.version = model, version_dir.name
    return version_dir, manifest


def stage_bundle(version_dir: Path, manifest: Manifest, workdir: Path) -> Path:
    """The version directory's files as one zip, named uniquely so that jobs never share a cache entry."""
    archive = workdir / f"modelport-{manifest.name}-v{manifest.version}-{uuid.uuid4().hex[:8]}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(version_dir.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(version_dir).as_posix())
    return archive


_SHIPPED_TO: set[str] = set()  # Spark application ids that already have the code


def ship_code(sc: Any) -> None:
    """Add the project's code once per SparkContext (Spark refuses the same name twice). The zip
    lives until this process exits: executors that join later still fetch it from the driver."""
    if sc.applicationId in _SHIPPED_TO:
        return
    workdir = Path(tempfile.mkdtemp(prefix="modelport-code-"))
    atexit.register(shutil.rmtree, workdir, True)
    sc.addPyFile(str(stage_code(workdir)))
    _SHIPPED_TO.add(sc.applicationId)


def stage_code(workdir: Path) -> Path:
    """``score``, ``runtime`` and ``bundle`` as a zip for ``addPyFile`` (Python sources only)."""
    archive = workdir / "modelport-code.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in SHIPPED_PACKAGES:
            for path in sorted((PROJECT / package).rglob("*.py")):
                zf.write(path, path.relative_to(PROJECT).as_posix())
    return archive


# ---- Spark --------------------------------------------------------------------------------------------
def session(job: Job) -> Any:
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(f"modelport-score {job.model}")
    master = job.master
    if master is None and not SparkConf().contains("spark.master"):
        master = "local[*]"  # not under spark-submit, and no --master: score on this machine
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # The executors' Python must be this environment's (it has pyarrow and the engines), and a
        # job on one machine listens on loopback only.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    builder = builder.config("spark.ui.showConsoleProgress", "false")  # one summary line instead
    for key, value in job.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("MODELPORT_SPARK_LOG_LEVEL", "ERROR"))
    return spark


def guess_input_format(path: str) -> str:
    lowered = path.lower().rstrip("/")
    for suffix, fmt in ((".csv", "csv"), (".json", "json"), (".jsonl", "json"), (".parquet", "parquet")):
        if lowered.endswith(suffix):
            return fmt
    local = Path(path)
    if local.is_dir():
        names = [p.name.lower() for p in local.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
        if names and not any(n.endswith(".parquet") for n in names) and any(n.endswith(IMAGE_SUFFIXES) for n in names):
            return "images"
    return "parquet"


def read_input(spark: Any, path: str, fmt: str) -> Any:
    if "://" not in path and not Path(path).exists():
        raise ScoreError(f"{path}: no such file or directory")
    reader = spark.read
    if fmt == "images":  # Spark's binaryFile source: path, modificationTime, length, content
        return reader.format("binaryFile").option("recursiveFileLookup", "true").load(path)
    if fmt == "csv":
        return reader.option("header", "true").option("inferSchema", "true").csv(path)
    if fmt == "json":
        return reader.json(path)
    return reader.parquet(path)


def column_kinds(schema: Any) -> dict[str, str]:
    from pyspark.sql import types as T

    kinds = {}
    for f in schema.fields:
        dt = f.dataType
        if isinstance(dt, T.ArrayType):
            kinds[f.name] = "array"
        elif isinstance(dt, T.BinaryType):
            kinds[f.name] = "binary"
        elif isinstance(dt, T.StringType):
            kinds[f.name] = "string"
        elif isinstance(dt, (T.NumericType, T.BooleanType)):
            kinds[f.name] = "numeric"
        else:
            kinds[f.name] = "other"
    return kinds


def arrow_type(emit: planning.Emit) -> pa.DataType:
    """An output's Arrow type from the one datatype table (``bundle.datatypes``); nested per axis."""
    if emit.datatype == "BYTES":
        inner: pa.DataType = pa.string()
    else:
        inner = pa.from_numpy_dtype(Datatype(emit.datatype).numpy)
        inner = SPARK_WIDER.get(inner, inner)
    for _ in range(emit.rank):
        inner = pa.list_(inner)
    return inner


def output_schema(plan: planning.Plan, input_schema: Any) -> Any:
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import from_arrow_type

    fields = [input_schema[c] for c in plan.keep]
    fields += [T.StructField(e.column, from_arrow_type(arrow_type(e)), True) for e in plan.emits]
    return T.StructType(fields)


def _map(plan: planning.Plan, counters: tuple[Any, Any, Any], batches: Iterator[pa.RecordBatch]) -> Iterator[Any]:
    """Runs in the executors' Python workers: score, and count rows, errors and engine loads."""
    rows, errors, loads = counters
    for batch in worker.score_partition(plan, batches, on_load=lambda pid: loads.add({pid: 1})):
        rows.add(batch.num_rows)
        errors.add(batch.num_rows - batch.column(planning.ERROR_COLUMN).null_count)
        yield batch


class _PidCounts:
    """An AccumulatorParam: {pid: engine loads}, merged by adding."""

    def zero(self, value: dict[int, int]) -> dict[int, int]:
        return {}

    def addInPlace(self, a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
        for pid, count in b.items():
            a[pid] = a.get(pid, 0) + count
        return a


def run(job: Job, spark: Any = None) -> Result:
    """Score ``job``; in ``spark`` when given (it stays open), else in a session of its own."""
    started = time.perf_counter()
    if job.input_format is not None and job.input_format not in INPUT_FORMATS:
        raise ScoreError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}")
    output_format = job.output_format or _guess_output_format(job.output)
    if output_format not in OUTPUT_FORMATS:
        raise ScoreError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}")
    if "://" not in job.output and Path(job.output).exists() and not job.overwrite:
        raise ScoreError(f"{job.output}: already exists (use --overwrite to replace it)")
    version_dir, manifest = resolve_bundle(job.repository, job.model, job.version)
    fmt = job.input_format or guess_input_format(job.input)
    image = image_preprocessing(manifest) if manifest.format == "onnx" else None
    mapping = dict(job.mapping)
    keep = job.keep
    if fmt == "images":
        if image is None:
            raise ScoreError(f"model {manifest.name!r} has no image input, so it cannot score a folder of images")
        mapping.setdefault(image.input, "content")
        keep = ["path"] if keep is None else keep

    workdir = Path(tempfile.mkdtemp(prefix="modelport-score-"))
    own = spark is None
    try:
        if own:
            spark = session(job)
        sc = spark.sparkContext
        frame = read_input(spark, job.input, fmt)
        try:
            plan = planning.build(
                manifest,
                column_kinds(frame.schema),
                archive="",
                mapping=mapping,
                keep=keep or [],
                batch_rows=job.batch_rows,
                fail_on_error=job.fail_on_error,
                image_input=image.input if image is not None else None,
            )
        except planning.PlanError as exc:
            raise ScoreError(f"{job.input}: {exc}") from None
        plan.manifest = _batchable(manifest, plan.batch_rows)
        defaults = Settings(repository=Path("."))
        plan.max_image_pixels, plan.max_elements = defaults.max_image_pixels, defaults.max_elements
        archive = stage_bundle(version_dir, manifest, workdir)
        plan.archive = archive.name
        sc.addArchive(str(archive))
        ship_code(sc)
        schema = output_schema(plan, frame.schema)
        from pyspark.sql.pandas.types import to_arrow_schema

        plan.output_schema = to_arrow_schema(schema)
        restore = apply_conf(spark, scoring_conf(plan, fmt, sc.defaultParallelism), job.conf)
        counters = (sc.accumulator(0), sc.accumulator(0), sc.accumulator({}, _PidCounts()))
        needed = list(dict.fromkeys([*plan.keep, *(c for f in plan.feeds for c in f.sources)]))
        scored = frame.select(*needed).mapInArrow(functools.partial(_map, plan, counters), schema)
        if output_format == "csv":  # CSV has no arrays: they are written as JSON text
            from pyspark.sql import functions as F
            from pyspark.sql import types as T

            arrays = [f.name for f in schema.fields if isinstance(f.dataType, T.ArrayType)]
            scored = scored.select(*[F.to_json(c).alias(c) if c in arrays else F.col(c) for c in scored.columns])
        writer = scored.write.format(output_format).mode("overwrite" if job.overwrite else "errorifexists")
        if output_format == "csv":
            writer = writer.option("header", "true")
        if output_format == "parquet":
            for key in undictionaried(plan):
                writer = writer.option(key, "false")
        writing = time.perf_counter()
        try:
            writer.save(job.output)
        except Exception as exc:
            raise ScoreError(job_failure(exc), status=1) from None
        finally:
            restore()
        loads: dict[int, int] = counters[2].value
        return Result(
            rows=counters[0].value,
            errors=counters[1].value,
            engine_loads=sum(loads.values()),
            worker_pids=set(loads),
            seconds=time.perf_counter() - started,
            job_seconds=time.perf_counter() - writing,
            output=job.output,
            model=manifest.name,
            version=manifest.version,
        )
    finally:
        if own and spark is not None:
            stop(spark)
        shutil.rmtree(workdir, ignore_errors=True)


def stop(spark: Any) -> None:
    """Stop ``spark``'s application; on ``local-cluster``, also remove the files its workers keep under
    $SPARK_HOME/work."""
    app, local_cluster = spark.sparkContext.applicationId, spark.sparkContext.master.startswith("local-cluster")
    spark.stop()
    if local_cluster:
        import pyspark

        shutil.rmtree(Path(pyspark.__file__).parent / "work" / app, ignore_errors=True)


BATCH_ROWS_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"
ARROW_UNLIMITED_BYTES = str(2**31 - 1)  # Spark's own "no byte limit" for spark.sql.execution.arrow.maxBytesPerBatch
TASKS_PER_CORE = 4  # image folders: enough tasks to keep every core busy to the end, few enough to be cheap


def scoring_conf(plan: planning.Plan, fmt: str, cores: int) -> dict[str, str]:
    """The Spark SQL settings this job runs with, and why (docs/batch.md, "Performance", has the profile):

    * ``arrow.maxRecordsPerBatch``: ``--batch-rows`` rows per Arrow batch, so one batch is one model call.
    * ``arrow.maxBytesPerBatch``: unlimited for tables. With a byte limit, Spark measures the Arrow
      batch after every row it appends (every column's buffers), which cost a quarter of the
      executor's time on a 33-column table. A table row's size is bounded by its columns, so the
      row count alone bounds the batch. Image rows (whole files) keep Spark's byte limit.
    * ``files.openCostInBytes`` and ``files.minPartitionNum`` for a folder of images: Spark counts
      4 MB for opening each file, so small images made one task per few files (225 tasks for 900
      photos), each with its own scheduling and Arrow stream. Scoring an image costs far more than
      opening it: count nothing for the open, and split the folder into ``TASKS_PER_CORE`` tasks
      per core (``spark.sql.files.maxPartitionBytes`` still caps a task's bytes).
    """
    conf = {BATCH_ROWS_KEY: str(plan.batch_rows)}
    if not any(f.kind == "image" for f in plan.feeds):
        conf["spark.sql.execution.arrow.maxBytesPerBatch"] = ARROW_UNLIMITED_BYTES
    if fmt == "images":
        conf["spark.sql.files.openCostInBytes"] = "0"
        conf["spark.sql.files.minPartitionNum"] = str(max(1, cores) * TASKS_PER_CORE)
    return conf


def apply_conf(spark: Any, conf: dict[str, str], user: dict[str, str]) -> Any:
    """Set ``conf`` on the session, except what the user set (``--conf`` or spark-submit's); returns
    a function that puts the session's previous values back (a caller's session outlives the job)."""
    submitted = spark.sparkContext.getConf()
    previous: dict[str, str | None] = {}
    for key, value in conf.items():
        if key != BATCH_ROWS_KEY and (key in user or submitted.contains(key)):
            continue  # --batch-rows is the user's say on batch rows; the others are theirs to override
        previous[key] = spark.conf.get(key, None)
        spark.conf.set(key, value)

    def restore() -> None:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)

    return restore


def undictionaried(plan: planning.Plan) -> list[str]:
    """Parquet writer settings that turn dictionary encoding off for the float outputs, column by column.

    Parquet tries a dictionary for every column first and falls back to plain encoding once the
    dictionary outgrows its page; model scores are continuous, so for them the attempt never pays
    and costs a hash-map insert per value (the profile in docs/batch.md). Labels and other text keep
    their dictionary. The column paths are Parquet's: a Spark array is ``NAME.list.element``."""
    keys = []
    for emit in plan.emits:
        if emit.datatype in ("FP16", "FP32", "FP64"):
            path = ".".join([emit.column, *["list", "element"] * emit.rank])
            keys.append(f"parquet.enable.dictionary#{path}")
    return keys


def _guess_output_format(path: str) -> str:
    lowered = path.lower().rstrip("/")
    return next((f for f in ("csv", "json") if lowered.endswith("." + f)), "parquet")


def _batchable(manifest: Manifest, batch_rows: int) -> Manifest:
    """The manifest the workers load with. ``max_batch_size`` is the server's per-request cap (Triton's);
    when every input has a variable batch axis the graph takes any number of rows, so batch scoring
    feeds ``--batch-rows`` rows per call instead of splitting batches to the serving cap."""
    if manifest.format == "onnx" and manifest.inputs and all(s.shape and s.shape[0] == -1 for s in manifest.inputs):
        return dataclasses.replace(manifest, max_batch_size=max(manifest.max_batch_size, batch_rows))
    return manifest


def job_failure(exc: BaseException) -> str:
    """One line for a failed job: the bad row's message with --fail-on-error, else Spark's own first line."""
    text = str(exc)
    found = re.findall(re.escape(worker.ROW_ERROR_PREFIX) + r"(.*)", text)
    if found:
        return f"stopped at the first bad row (--fail-on-error): {found[-1].strip()}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    python_error = [line for line in lines if re.match(r"^[A-Za-z_.]+(Error|Exception): ", line)]
    reason = python_error[-1] if python_error else (lines[0] if lines else type(exc).__name__)
    return f"the Spark job failed: {reason}"
