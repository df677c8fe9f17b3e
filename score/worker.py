"""The executor side: Arrow record batches in, scored Arrow record batches out (``mapInArrow``).

No Spark here beyond ``SparkFiles`` (to find the shipped bundle): everything else is the server's
code. The engine is loaded once per Python worker process and kept in ``_ENGINES``: Spark reuses
its Python workers across tasks (``spark.python.worker.reuse``, on by default), so a worker pays
for the load once, not once per task or batch. onnxruntime gets one intra-op thread, because Spark's
tasks (one per executor core) are the parallelism.

Each chunk of ``plan.batch_rows`` rows goes the fast way first: columns become numpy arrays without
touching rows, the engine's ``validate`` checks the whole batch, ``predict`` runs it once. Only when
that fails (a null, a ragged array, a value the model's datatype cannot hold, an undecodable image)
are the rows taken one at a time, each as the server would take it alone: the simple API's JSON
decoding (``runtime.codecs.simple_json``) or the image endpoint's decoder, then ``validate``. A row
that fails gets null outputs and the server's 400 text in ``error``; the others are scored together.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from runtime.codecs import simple_json
from runtime.codecs.image import decode_image, image_preprocessing
from runtime.engines import Engine, EngineOptions, load_engine
from runtime.errors import BadRequest, ModelportError
from score.plan import ERROR_COLUMN, LABEL_COLUMN, SCORE_COLUMN, Feed, Plan

ROW_ERROR_PREFIX = "modelport-score row error: "  # the driver finds --fail-on-error's message by it

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()
LOADS: list[int] = []  # pids of the engine loads in this process (what the driver's accumulator reports)


class RowError(RuntimeError):
    """--fail-on-error: the first bad row stops the task (and, Spark's retries spent, the job)."""


class _RowByRow(Exception):
    """The columnar fast path cannot take this batch; explain it row by row."""


# ---- the engine, once per Python worker ------------------------------------------------------------
def bundle_dir(plan: Plan) -> Path:
    """Where ``addArchive`` unpacked the bundle on this executor."""
    from pyspark import SparkFiles

    return Path(SparkFiles.get(plan.archive))


def engine_for(plan: Plan, directory: Path | None = None, on_load: Any = None) -> Engine:
    with _LOCK:
        engine = _ENGINES.get(plan.archive)
        if engine is None:
            if plan.manifest.format == "pmml":
                _unshadow_java_packages()
            directory = directory or bundle_dir(plan)
            options = EngineOptions(intra_op_threads=1, inter_op_threads=1)
            engine = load_engine(plan.manifest.format, directory, plan.manifest, options)
            _ENGINES[plan.archive] = engine
            LOADS.append(os.getpid())
            if on_load is not None:
                on_load(os.getpid())
        return engine


def _unshadow_java_packages() -> None:
    """Spark puts its own ``spark-core_*.jar`` on the Python workers' PYTHONPATH. A jar is a zip, so
    Python's zipimport would answer ``import org....`` with a namespace package from that jar, before
    JPype's importer is asked, and pypmml's ``org.pmml4s`` classes would not be found. Python has
    nothing to import from a jar: drop them from ``sys.path`` before pypmml starts its JVM."""
    jars = [p for p in sys.path if p.endswith(".jar")]
    if jars:
        sys.path[:] = [p for p in sys.path if not p.endswith(".jar")]
        for jar in jars:
            sys.path_importer_cache.pop(jar, None)
        for name in [m for m in sys.modules if m == "org" or m.startswith("org.")]:
            if getattr(sys.modules[name], "__file__", None) is None:  # a namespace package from a jar
                del sys.modules[name]


def score_partition(plan: Plan, batches: Iterator[pa.RecordBatch], on_load: Any = None) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` function (bound to ``plan`` with functools.partial on the driver)."""
    engine = engine_for(plan, on_load=on_load)
    for batch in batches:
        for start in range(0, batch.num_rows, plan.batch_rows):
            yield score_batch(plan, engine, batch.slice(start, plan.batch_rows))


# ---- one chunk ----------------------------------------------------------------------------------------
def score_batch(plan: Plan, engine: Engine, batch: pa.RecordBatch) -> pa.RecordBatch:
    rows = batch.num_rows
    errors: list[str | None] = [None] * rows
    good = np.arange(rows)
    outputs: dict[str, np.ndarray] = {}
    if rows:
        try:
            inputs, good = _columnar(plan, engine, batch, errors)
            checked = engine.validate(inputs) if len(good) else {}
        except (_RowByRow, BadRequest):
            errors = [None] * rows
            checked, good = _row_by_row(plan, engine, batch, errors)
        if len(good):
            outputs, good = _predict(plan, engine, checked, good, errors)
    if plan.fail_on_error:
        _raise_first(plan, batch, errors)
    return _assemble(plan, batch, outputs, good, errors)


def _raise_first(plan: Plan, batch: pa.RecordBatch, errors: list[str | None]) -> None:
    for i, error in enumerate(errors):
        if error is not None:
            where = ", ".join(f"{c}={batch.column(c)[i].as_py()!r}" for c in plan.keep[:3])
            raise RowError(f"{ROW_ERROR_PREFIX}{'row ' + where + ': ' if where else ''}{error}")


def _predict(
    plan: Plan, engine: Engine, checked: dict[str, np.ndarray], good: np.ndarray, errors: list[str | None]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One call for the batch; when the model itself refuses it, find the rows it refuses one by one."""
    try:
        return engine.predict(checked, plan.outputs), good
    except ModelportError:
        if len(good) == 1:
            errors[int(good[0])] = _message(engine, checked)
            return {}, good[:0]
    parts, kept = [], []
    for j, row in enumerate(good.tolist()):
        one = {name: array[j : j + 1] for name, array in checked.items()}
        try:
            parts.append(engine.predict(one, plan.outputs))
            kept.append(row)
        except ModelportError as exc:
            errors[row] = str(exc)
    if not parts:
        return {}, good[:0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}, np.asarray(kept, dtype=np.int64)


def _message(engine: Engine, checked: dict[str, np.ndarray]) -> str:
    try:
        engine.predict(checked)
    except ModelportError as exc:
        return str(exc)
    return "the model failed on this row"


# ---- the fast path: whole columns -------------------------------------------------------------------
def _columnar(
    plan: Plan, engine: Engine, batch: pa.RecordBatch, errors: list[str | None]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every input as one array. Image rows that do not decode are marked in ``errors`` and left out."""
    good = np.arange(batch.num_rows)
    images = [f for f in plan.feeds if f.kind == "image"]
    if images:
        decoded, good = _decode_images(plan, engine, batch, images[0], errors)
    inputs: dict[str, np.ndarray] = {}
    for feed in plan.feeds:
        if feed.kind == "image":
            inputs[feed.input] = decoded
            continue
        picked = [batch.column(c) for c in feed.sources]
        if len(good) != batch.num_rows:
            picked = [column.take(pa.array(good)) for column in picked]
        inputs[feed.input] = _columns_array(feed, picked) if feed.kind == "columns" else _column_array(feed, picked[0])
    return inputs, good


def _decode_images(
    plan: Plan, engine: Engine, batch: pa.RecordBatch, feed: Feed, errors: list[str | None]
) -> tuple[np.ndarray, np.ndarray]:
    spec = image_preprocessing(engine.manifest)
    assert spec is not None  # the plan only makes an image feed for a bundle with image preprocessing
    pixels, good = [], []
    for i, data in enumerate(batch.column(feed.column).to_pylist()):
        try:
            if data is None:
                raise BadRequest("the request body is empty; send the image bytes")
            pixels.append(decode_image(data, spec, plan.max_image_pixels))
            good.append(i)
        except ModelportError as exc:
            errors[i] = str(exc)
    shape = (0, *pixels[0].shape) if pixels else (0,)
    stacked = np.stack(pixels) if pixels else np.empty(shape, dtype=np.float32)
    return stacked, np.asarray(good, dtype=np.int64)


def _columns_array(feed: Feed, columns: list[pa.Array]) -> np.ndarray:
    """K numeric columns as one [N, K] array: each primitive column is copied once into its place."""
    if any(column.null_count for column in columns):
        raise _RowByRow  # a null feature: the row-by-row path scores it as the server would (NaN)
    stacked = np.column_stack([column.to_numpy(zero_copy_only=False) for column in columns])
    return _cast(feed.spec.datatype, stacked)


def _column_array(feed: Feed, column: pa.Array) -> np.ndarray:
    spec = feed.spec
    if feed.kind == "field":  # PMML: the engine's own check_fields converts and checks every value
        if column.null_count:
            raise _RowByRow
        return column.to_numpy(zero_copy_only=False)
    rows = len(column)
    dims: list[int] = []
    values: pa.Array = column
    if feed.kind == "array":
        for want in spec.shape[1:]:
            if values.null_count or (not pa.types.is_list(values.type) and not pa.types.is_large_list(values.type)):
                raise _RowByRow
            lengths = values.value_lengths().to_numpy(zero_copy_only=False)
            size = int(lengths[0]) if len(lengths) else max(want, 0)
            if (want >= 0 and size != want) or (len(lengths) and (lengths != size).any()):
                raise _RowByRow  # ragged or the wrong length: the row-by-row path names the row's shape
            dims.append(size)
            values = values.flatten()
    if values.null_count:
        raise _RowByRow
    array = _cast(spec.datatype, values.to_numpy(zero_copy_only=False))
    if feed.kind == "scalar":
        return array.reshape(rows, 1) if len(spec.shape) == 2 else array
    return array.reshape(rows, *dims)


def _cast(datatype: str, values: np.ndarray) -> np.ndarray:
    """The simple API's casts (numbers to the input's datatype, whole numbers for integers), whole
    arrays at a time; anything doubtful goes row by row, where the server's own decoder explains it."""
    from bundle.datatypes import Datatype

    want = Datatype(datatype).numpy
    kind = values.dtype.kind
    if datatype == "BYTES":
        if kind in "OU" and all(isinstance(v, str) for v in values.tolist()):
            return values.astype(object)
        raise _RowByRow
    if want.kind == "f" and kind in "biuf":
        return values.astype(want, copy=False)
    if want.kind == "b":
        if kind == "b":
            return values
        raise _RowByRow
    if want.kind in "iu" and kind in "biuf":
        if kind == "f" and not np.all(np.isfinite(values) & (values == np.floor(values))):
            raise _RowByRow
        info = np.iinfo(want)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise _RowByRow
        return values.astype(want)
    raise _RowByRow


# ---- the slow path: one row at a time, as the server takes one request ------------------------------
def _row_by_row(
    plan: Plan, engine: Engine, batch: pa.RecordBatch, errors: list[str | None]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    columns = {f.input: _row_values(batch, f) for f in plan.feeds}
    checked_rows, good = [], []
    for i in range(batch.num_rows):
        try:
            checked_rows.append(engine.validate(row_inputs(plan, engine, {k: v[i] for k, v in columns.items()})))
            good.append(i)
        except ModelportError as exc:
            errors[i] = str(exc)
    if not checked_rows:
        return {}, np.empty(0, dtype=np.int64)
    checked = {name: np.concatenate([r[name] for r in checked_rows]) for name in checked_rows[0]}
    return checked, np.asarray(good, dtype=np.int64)


def _row_values(batch: pa.RecordBatch, feed: Feed) -> list[Any]:
    """The input's value in each row; for a feed of several columns, one list per row."""
    if feed.kind == "columns":
        return [list(values) for values in zip(*(batch.column(c).to_pylist() for c in feed.columns), strict=True)]
    return batch.column(feed.column).to_pylist()


def row_inputs(plan: Plan, engine: Engine, row: dict[str, Any]) -> dict[str, np.ndarray]:
    """One row as the server decodes one request for it: the image endpoint for an encoded image,
    ``POST /api/models/{name}/predict`` with records (tabular models) or named inputs otherwise."""
    manifest = engine.manifest
    images = {f.input for f in plan.feeds if f.kind == "image"}
    if images:
        spec = image_preprocessing(manifest)
        data = row[spec.input]
        if data is None:
            raise BadRequest("the request body is empty; send the image bytes")
        pixels = decode_image(data, spec, plan.max_image_pixels)
        rest = {k: _json_value(v) for k, v in row.items() if k not in images}
        named = simple_json.decode({"inputs": {k: [v] for k, v in rest.items()}}, manifest, plan.max_elements)[0]
        return {spec.input: pixels[None, ...], **named} if rest else {spec.input: pixels[None, ...]}
    values = {k: _json_value(v) for k, v in row.items()}
    if plan.tabular:
        payload: Any = [values]
    else:
        payload = {"inputs": {k: [v] for k, v in values.items()}}
    return simple_json.decode(payload, manifest, plan.max_elements)[0]


def _json_value(value: Any) -> Any:
    """What a JSON client would have sent for this cell (text for bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


# ---- the output batch ---------------------------------------------------------------------------------
def _assemble(
    plan: Plan, batch: pa.RecordBatch, outputs: dict[str, np.ndarray], good: np.ndarray, errors: list[str | None]
) -> pa.RecordBatch:
    rows = batch.num_rows
    schema: pa.Schema = plan.output_schema  # type: ignore[assignment]
    arrays: list[pa.Array] = [batch.column(c) for c in plan.keep]
    missing = np.ones(rows, dtype=bool)
    missing[good] = False
    everything = not missing.any()
    top = _top(plan, outputs)
    for emit in plan.emits:
        target = schema.field(emit.column).type
        if emit.column == ERROR_COLUMN:
            arrays.append(pa.nulls(rows, type=target) if everything else pa.array(errors, type=target))
            continue
        if emit.column == LABEL_COLUMN and emit.output is None:
            values = top[0] if top is not None else None
        elif emit.column == SCORE_COLUMN and emit.output is None:
            values = top[1] if top is not None else None
        else:
            values = outputs.get(emit.output) if emit.output else None
        arrays.append(_arrow(values, emit.rank, good, rows, missing, everything, target))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _top(plan: Plan, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The top label and its score per row, from the output the labels index."""
    if plan.label_output is None or plan.label_output not in outputs:
        return None
    scores = outputs[plan.label_output]
    scores = scores.reshape(scores.shape[0], -1).astype(np.float64)
    best = np.argmax(scores, axis=1)
    labels = np.asarray(plan.manifest.labels, dtype=object)
    names = np.where(best < len(labels), labels[np.minimum(best, len(labels) - 1)], best.astype(str))
    return names.astype(object), scores[np.arange(len(best)), best]


def _arrow(
    values: np.ndarray | None,
    rank: int,
    good: np.ndarray,
    rows: int,
    missing: np.ndarray,
    everything: bool,
    target: pa.DataType,
) -> pa.Array:
    if values is None or not len(good):
        return pa.nulls(rows, type=target)
    if values.dtype == object or values.dtype.kind in "SU":  # text outputs (bytes from PMML, str from ORT)
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.ravel().tolist()]
        values = np.asarray(flat, dtype=object).reshape(values.shape)
    if rank == 0:
        values = values.reshape(len(good))
    if not everything:  # scatter the scored rows into a full-length array; failed rows stay null
        full = np.zeros((rows, *values.shape[1:]), dtype=values.dtype)
        if values.dtype == object:
            full[...] = ""
        full[good] = values
        values = full
    mask = None if everything else missing
    if rank == 0:
        return pa.array(values, mask=mask).cast(target)
    return _nested(values, mask).cast(target)


def _nested(values: np.ndarray, mask: np.ndarray | None) -> pa.Array:
    """An [N, d1, d2, ...] array as N nested lists, built from offsets (no per-row Python)."""
    flat = pa.array(values.reshape(-1))
    for axis in range(values.ndim - 1, 0, -1):
        count = int(np.prod(values.shape[:axis]))
        size = values.shape[axis]
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * size)
        flat = pa.ListArray.from_arrays(offsets, flat, mask=pa.array(mask) if axis == 1 and mask is not None else None)
    return flat
