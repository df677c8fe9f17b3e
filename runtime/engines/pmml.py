"""The PMML engine: pypmml (PMML4S) on an in-process JVM reached through JPype.

Why these choices:

* ``gateway="jpype"`` runs the JVM inside this process (libjvm), so there is no ``java`` child that
  could outlive the server, and a call costs microseconds instead of py4j's socket round trip
  (docs/pmml.md, "Measured", has the figures). The JVM starts on the first PMML load, never on
  import, and is shut down once at interpreter exit: a JPype JVM cannot be restarted in the same
  process, so closing one engine must not take the JVM away from a model loaded later.
* pypmml answers NaN (not an error) for a missing, misspelt or non-numeric field, so every request
  is checked here against the fields recorded from the document before it reaches the JVM.
* A batch is scored with one call to PMML4S's JSON "split" entry point: after JIT warm-up it is faster
  per row than a per-row loop (docs/pmml.md, "Measured").

V2 mapping: one input per PMML field, shape ``[-1]`` (``[N, 1]`` is accepted too), BYTES for string
fields and FP64 for numeric ones; or, when every field is numeric, one ``[N, k]`` FP64 tensor named
``input__fields`` holding the fields in ``manifest.inputs`` order. One output per PMML output
field, plus the predicted value named after the target field.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bundle.manifest import Manifest, TensorSpec
from runtime.engines import EngineOptions
from runtime.errors import BadRequest, InferenceError, ModelLoadError

FIELDS_INPUT = "input__fields"  # the optional single 2-D FP64 input: every field, in manifest order
PREDICTED_VALUE = "predictedValue"
NUMERIC_TYPES = {"double", "float", "real", "integer"}
# -Xrs: the JVM must not install its own SIGTERM/SIGINT handlers in our process; they would exit
# at once (status 143) and skip the server's graceful shutdown. JAVA_OPTS adds to these.
JVM_OPTIONS = ["-Xrs"]
STRICT_INVALID = {"returnInvalid"}  # MiningField invalidValueTreatment values that make pypmml return NaN

_jvm_lock = threading.Lock()
_jvm_started = False


# ---- the JVM ----------------------------------------------------------------------------------
def ensure_jvm() -> Any:
    """Start pypmml's JPype gateway once per process and return the ``pypmml`` module.

    ``JAVA_OPTS`` (e.g. ``-Xmx512m``) is honoured by pypmml. The import is here, not at module
    level, so that merely importing this module never loads a JVM."""
    global _jvm_started
    with _jvm_lock:
        import pypmml

        if not _jvm_started:
            pypmml.PMMLContext.getOrCreate(gateway="jpype", java_opts=JVM_OPTIONS)
            atexit.register(_shutdown_jvm)
            _jvm_started = True
    return pypmml


def _shutdown_jvm() -> None:
    """Shut the JVM down gracefully at exit (runs before JPype's own hard-exit hook)."""
    import pypmml

    # exiting anyway: a failed graceful shutdown must not mask the real exit status
    with contextlib.suppress(Exception):
        pypmml.PMMLContext.shutdown()


def _attach_thread() -> None:
    """Attach the calling worker thread as a daemon, so a thread pool never holds the JVM open."""
    import jpype

    if not jpype.isJVMStarted():  # another gateway (py4j, in benchmarks) owns the JVM
        return
    thread = jpype.JClass("java.lang.Thread")
    if not thread.isAttached():
        thread.attachAsDaemon()


# ---- fields -------------------------------------------------------------------------------------
def v2_datatype(pmml_type: str) -> str:
    if pmml_type in NUMERIC_TYPES:
        return "FP64"
    if pmml_type == "boolean":
        return "BOOL"
    return "BYTES"  # string and the date/time types travel as text


def output_datatype(pmml_type: str) -> str:
    if pmml_type == "integer":
        return "INT64"
    return v2_datatype(pmml_type)


@dataclass(frozen=True)
class DocumentFacts:
    """What pypmml does not expose cleanly: valid values (it joins them with commas) and whether
    an out-of-vocabulary value makes the model return NaN."""

    values: dict[str, list[str]]
    strict: dict[str, bool]


def read_document_facts(path: Path) -> DocumentFacts:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ModelLoadError(f"{path}: not well-formed XML: {exc}") from exc
    values: dict[str, list[str]] = {}
    for data_field in root.iterfind("{*}DataDictionary/{*}DataField"):
        valid = [v.get("value", "") for v in data_field.iterfind("{*}Value") if v.get("property", "valid") == "valid"]
        values[data_field.get("name", "")] = valid
    strict: dict[str, bool] = {}
    model = next((child for child in root if child.find("{*}MiningSchema") is not None), None)
    if model is not None:
        for mining_field in model.iterfind("{*}MiningSchema/{*}MiningField"):
            treatment = mining_field.get("invalidValueTreatment", "returnInvalid")
            strict[mining_field.get("name", "")] = treatment in STRICT_INVALID
    return DocumentFacts(values, strict)


def describe(model: Any, path: Path, name: str) -> Manifest:
    """A manifest derived from the PMML document (what pypmml and the XML say about its fields).

    ``labels`` stays empty: it names the classes along one probability tensor's last axis, while PMML
    has one output per class (``probability(<class>)``), which already carries the class name."""
    facts = read_document_facts(path)
    inputs = []
    for field in model.inputFields:
        optype = str(field.opType)
        allowed = facts.values.get(field.name) or None
        if optype == "continuous" or not facts.strict.get(field.name, True):
            allowed = None  # only a strict categorical field has a vocabulary worth enforcing
        inputs.append(TensorSpec(field.name, v2_datatype(str(field.dataType)), [-1], optype, allowed))
    target = model.targetName or None
    outputs: list[TensorSpec] = []
    model.setSupplementOutput(True)
    for field in model.outputFields:
        spec = TensorSpec(field.name, output_datatype(str(field.dataType)), [-1], str(field.opType))
        if str(field.feature) == PREDICTED_VALUE and target and not any(o.name == target for o in outputs):
            # The predicted value's own type, not the target's: a regression on an integer target is real.
            outputs.insert(0, TensorSpec(target, spec.datatype, [-1], spec.optype, source_name=field.name))
        elif not any(o.name == field.name for o in outputs):
            outputs.append(spec)
    return Manifest(name=name, format="pmml", inputs=inputs, outputs=outputs, max_batch_size=-1, target=target)


def load_model(path: Path) -> Any:
    """Parse ``path`` with pypmml; a document PMML4S rejects is a ModelLoadError naming the file."""
    pypmml = ensure_jvm()
    try:
        model = pypmml.Model.fromFile(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{path}: pypmml cannot load this PMML document: {exc}") from exc
    model.setSupplementOutput(True)
    return model


# ---- request checks -----------------------------------------------------------------------------
def _column(name: str, value: np.ndarray, rows: int | None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise BadRequest(f"field {name!r}: expected shape [N] or [N,1], got {list(array.shape)}")
    if rows is not None and array.shape[0] != rows:
        raise BadRequest(f"field {name!r}: {array.shape[0]} rows, but other fields have {rows}")
    return array


def _as_text(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "OSU":
        raise BadRequest(f"field {name!r} is a string field: send text (BYTES), not {array.dtype}")
    out = np.empty(array.shape[0], dtype=object)
    for i, item in enumerate(array.tolist()):
        if item is None:
            raise BadRequest(f"field {name!r}: row {i} has no value")
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"field {name!r}: row {i} is not UTF-8 text") from None
        elif not isinstance(item, str):
            raise BadRequest(f"field {name!r}: row {i} is {item!r}, not text")
        out[i] = item
    return out


def _as_number(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "biuf":
        numbers = array.astype(np.float64)
    elif array.dtype.kind in "OSU":
        numbers = np.empty(array.shape[0], dtype=np.float64)
        for i, item in enumerate(array.tolist()):
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            try:
                if isinstance(text, bool) or text is None:
                    raise TypeError
                numbers[i] = float(text)
            except (TypeError, ValueError):
                raise BadRequest(f"field {name!r} is numeric: row {i} is {text!r}, not a number") from None
    else:
        raise BadRequest(f"field {name!r} is numeric: {array.dtype} values are not numbers")
    bad = ~np.isfinite(numbers)
    if bad.any():
        i = int(np.argmax(bad))
        raise BadRequest(f"field {name!r}: row {i} is {numbers[i]}, not a finite number")
    return numbers


def _check_allowed(spec: TensorSpec, column: np.ndarray) -> None:
    allowed = spec.allowed_values
    if not allowed:
        return
    if column.dtype == object:
        ok = np.isin(column, np.array(allowed, dtype=object))
    else:
        ok = np.isin(column, np.array([float(v) for v in allowed]))
    if not ok.all():
        i = int(np.argmin(ok))
        shown = ", ".join(allowed[:20]) + (", ..." if len(allowed) > 20 else "")
        raise BadRequest(f"field {spec.name!r}: row {i} value {column[i]!r} is not one of {shown}")


def check_fields(specs: list[TensorSpec], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-field 1-D columns (float64 or str objects) that pypmml will score without silent NaNs."""
    names = [s.name for s in specs]
    if FIELDS_INPUT in inputs and FIELDS_INPUT not in names:
        inputs = _split_fields_input(specs, inputs)
    unknown = [n for n in inputs if n not in names]
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; the model's fields are: {', '.join(names)}")
    missing = [n for n in names if n not in inputs]
    if missing:
        raise BadRequest(f"missing field {missing[0]!r}; the model needs: {', '.join(names)}")
    columns: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in specs:
        column = _column(spec.name, inputs[spec.name], rows)
        rows = column.shape[0]
        if spec.datatype == "FP64":
            column = _as_number(spec.name, column)
        elif spec.datatype == "BOOL":
            column = column.astype(bool) if column.dtype.kind in "biu" else _as_bool(spec.name, column)
        else:
            column = _as_text(spec.name, column)
        _check_allowed(spec, column)
        columns[spec.name] = column
    return columns


def _as_bool(name: str, array: np.ndarray) -> np.ndarray:
    text = _as_text(name, array)
    lowered = np.array([t.lower() for t in text], dtype=object)
    if not np.isin(lowered, ["true", "false"]).all():
        raise BadRequest(f"field {name!r} is boolean: send true/false")
    return lowered == "true"


def _split_fields_input(specs: list[TensorSpec], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if len(inputs) != 1:
        others = ", ".join(n for n in inputs if n != FIELDS_INPUT)
        raise BadRequest(f"{FIELDS_INPUT!r} holds every field; do not also send {others}")
    non_numeric = [s.name for s in specs if s.datatype != "FP64"]
    if non_numeric:
        raise BadRequest(f"{FIELDS_INPUT!r} needs all-numeric fields; field {non_numeric[0]!r} is text: send per field")
    matrix = np.asarray(inputs[FIELDS_INPUT])
    if matrix.ndim != 2 or matrix.shape[1] != len(specs):
        names = ", ".join(s.name for s in specs)
        raise BadRequest(f"{FIELDS_INPUT!r}: expected shape [N, {len(specs)}] ({names}), got {list(matrix.shape)}")
    return {spec.name: matrix[:, i] for i, spec in enumerate(specs)}


def example_columns(specs: list[TensorSpec], rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Validated-looking columns: allowed values in turn for categorical fields, numbers around 0."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for spec in specs:
        pool = spec.allowed_values or ([""] if spec.datatype == "BYTES" else None)
        if spec.datatype == "BYTES":
            columns[spec.name] = np.array([pool[i % len(pool)] for i in range(rows)], dtype=object)
        elif spec.datatype == "BOOL":
            columns[spec.name] = np.arange(rows) % 2 == 0
        elif pool:
            columns[spec.name] = np.array([float(pool[i % len(pool)]) for i in range(rows)])
        else:
            columns[spec.name] = rng.standard_normal(rows)
    return columns


# ---- the engine ---------------------------------------------------------------------------------
class PmmlEngine:
    """One PMML document, scored in batches. ``predict`` may run in any worker thread."""

    def __init__(self, model: Any, manifest: Manifest) -> None:
        self._model = model
        self.manifest = manifest
        self._input_names = [s.name for s in manifest.inputs]
        self._score_lock = threading.Lock()  # PMML4S models are not documented as thread-safe
        self.concurrency = 1  # the lock serialises scoring: a second run at once would only wait

    def validate(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return check_fields(self.manifest.inputs, inputs)

    def predict(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        wanted = [o for o in self.manifest.outputs if outputs is None or o.name in outputs]
        columns = [inputs[name].tolist() for name in self._input_names]
        rows = len(columns[0]) if columns else 0
        if rows == 0:
            return {o.name: np.empty(0, dtype=_numpy_type(o.datatype)) for o in wanted}
        payload = orjson.dumps({"columns": self._input_names, "data": list(zip(*columns, strict=True))}).decode()
        _attach_thread()
        try:
            with self._score_lock:
                answer = str(self._model.predict(payload))
        except Exception as exc:
            raise InferenceError(f"model {self.manifest.name!r}: pypmml failed: {exc}") from exc
        result = orjson.loads(answer)
        index = {name: i for i, name in enumerate(result["columns"])}
        data = result["data"]
        return {o.name: self._output(o, index, data) for o in wanted}

    def _output(self, spec: TensorSpec, index: dict[str, int], data: list[list[Any]]) -> np.ndarray:
        source = spec.source_name or spec.name
        if source not in index:
            raise InferenceError(f"model {self.manifest.name!r}: pypmml returned no output {source!r}")
        values = [row[index[source]] for row in data]
        if spec.datatype == "FP64":
            return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        if None in values:
            row = values.index(None)
            raise InferenceError(f"model {self.manifest.name!r}: no value for output {spec.name!r} in row {row}")
        if spec.datatype == "BYTES":
            return np.array([str(v).encode("utf-8") for v in values], dtype=object)
        return np.array(values, dtype=_numpy_type(spec.datatype))

    def warmup(self, rows: int = 64, passes: int = 5) -> None:
        """Score made-up batches so class loading and the JIT's first passes over the JSON batch
        path happen at load, not in the first requests (a cold 2000-row batch measured ~10x slower).

        Best effort: a document whose outputs are empty for made-up values still serves."""
        with contextlib.suppress(InferenceError):
            for seed in range(passes):
                self.predict(example_columns(self.manifest.inputs, rows, seed))

    def close(self) -> None:
        """Drop the model. The JVM stays up for other models and stops at exit (see module doc)."""
        self._model = None


def _numpy_type(datatype: str) -> Any:
    return {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_}.get(datatype, object)


def load(version_dir: Path, manifest: Manifest | None, options: EngineOptions) -> PmmlEngine:
    """Load ``model.pmml`` (or the manifest's model file); derive the manifest when there is none."""
    path = Path(version_dir) / (manifest.model_file if manifest else "model.pmml")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no PMML file")
    model = load_model(path)
    if manifest is None:
        manifest = describe(model, path, name=Path(version_dir).parent.name)
        manifest.version = Path(version_dir).name
    engine = PmmlEngine(model, manifest)
    if options.warmup and manifest.inputs:
        engine.warmup()
    return engine
