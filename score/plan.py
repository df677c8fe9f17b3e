"""Which column feeds which model input, and which columns come out: decided once, on the driver.

The plan is a small picklable value shipped to every task with the function. It holds the manifest
(so workers load the engine against the same contract the driver planned with), one ``Feed`` per
model input and one ``Emit`` per output column. Column kinds follow the manifest's shapes:

* ``scalar``: a ``[N]`` or ``[N, 1]`` input takes a numeric (or, for BYTES, string) column;
* ``array``: an ``[N, K, ...]`` input takes an array column (nested arrays for more axes);
* ``columns``: an ``[N, K]`` input takes K numeric columns, one per feature, named by ``--map
  INPUT=f0,f1,...`` or a glob (``--map INPUT='f*'``, in the table's column order), because tables
  usually hold one column per feature. (It is not cheaper for Spark: its row path costs per column per
  row, so 32 float columns cost the executor slightly more than one array of 32; docs/batch.md);
* ``image``: the bundle's image input takes a binary column holding an encoded image, which is
  decoded exactly as ``/api/models/{name}/image`` decodes an upload;
* ``field``: a PMML field, one column each.

Errors here are ``PlanError``: a message naming the column or input, for the command line.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from bundle.manifest import Manifest, TensorSpec

ERROR_COLUMN = "error"
LABEL_COLUMN = "label"
SCORE_COLUMN = "score"
DEFAULT_BATCH_ROWS = 10_000
DEFAULT_IMAGE_BATCH_ROWS = 64  # decoded 224x224x3 float32 images are 600 kB each


class PlanError(ValueError):
    """The input table does not fit the model (a missing column, a wrong column type, a name clash)."""


@dataclass(frozen=True)
class Feed:
    input: str  # model input name
    column: str  # table column (the first of ``columns`` for kind ``columns``)
    kind: str  # scalar | array | columns | image | field
    spec: TensorSpec
    columns: tuple[str, ...] = ()  # kind ``columns``: one numeric column per feature, in the input's order

    @property
    def sources(self) -> tuple[str, ...]:
        """Every table column this input reads."""
        return self.columns or (self.column,)


@dataclass(frozen=True)
class Emit:
    column: str
    output: str | None  # model output name; None for label/score/error
    datatype: str  # V2 datatype of the values ("BYTES" for text)
    rank: int  # axes after the batch axis that become nested arrays (0: a scalar column)


@dataclass
class Plan:
    model: str
    version: str
    manifest: Manifest
    archive: str  # the name SparkFiles knows the shipped bundle by
    feeds: list[Feed]
    emits: list[Emit]
    keep: list[str]
    batch_rows: int
    tabular: bool  # every input one value per row: bad rows are explained as the server's records form
    label_output: str | None = None
    fail_on_error: bool = False
    max_image_pixels: int = 40_000_000
    max_elements: int = 16 * 1024 * 1024
    output_schema: object = field(default=None, repr=False)  # pyarrow.Schema, set by the driver

    @property
    def outputs(self) -> list[str]:
        return [e.output for e in self.emits if e.output is not None]


def _is_scalar(spec: TensorSpec) -> bool:
    return spec.shape in ([-1], [-1, 1])


def label_output(manifest: Manifest) -> str | None:
    """The output the labels index: the manifest's ``label_output``, else the only [N, C>1] float output."""
    if not manifest.labels:
        return None
    if manifest.label_output and manifest.output(manifest.label_output) is not None:
        return manifest.label_output
    candidates = [
        o.name
        for o in manifest.outputs
        if len(o.shape) == 2 and o.shape[1] != 1 and o.datatype in ("FP16", "FP32", "FP64")
    ]
    return candidates[0] if len(candidates) == 1 else None


def build(
    manifest: Manifest,
    columns: dict[str, str],
    *,
    archive: str,
    mapping: dict[str, str],
    keep: list[str],
    batch_rows: int | None,
    fail_on_error: bool,
    image_input: str | None,
) -> Plan:
    """``columns`` maps each table column to its kind as Spark names it: ``array``, ``binary``,
    ``string`` or ``numeric`` (anything else is ``other``). ``image_input`` is the input that takes
    encoded images (the manifest's image preprocessing), when the bundle has one."""
    if manifest.format == "onnx" and manifest.max_batch_size == 0:
        raise PlanError(
            f"model {manifest.name!r} has no batch axis (max_batch_size 0): "
            "batch scoring needs inputs of shape [-1, ...]"
        )
    unknown = [name for name in mapping if manifest.input(name) is None]
    if unknown:
        inputs = ", ".join(s.name for s in manifest.inputs)
        raise PlanError(
            f"--map {unknown[0]}=...: model {manifest.name!r} has no input {unknown[0]!r} (inputs: {inputs})"
        )
    missing_keep = [c for c in keep if c not in columns]
    if missing_keep:
        raise PlanError(f"--keep {missing_keep[0]}: the input has no column {missing_keep[0]!r} ({_names(columns)})")
    feeds = [_feed(manifest, spec, mapping, columns, image_input) for spec in manifest.inputs]
    emits = []
    for spec in manifest.outputs:
        rank = 0 if _is_scalar(spec) else len(spec.shape) - 1
        emits.append(Emit(spec.name, spec.name, spec.datatype, rank))
    labelled = label_output(manifest)
    if labelled is not None:
        emits += [Emit(LABEL_COLUMN, None, "BYTES", 0), Emit(SCORE_COLUMN, None, "FP64", 0)]
    emits.append(Emit(ERROR_COLUMN, None, "BYTES", 0))
    taken = set(keep)
    for emit in emits:
        if emit.column in taken:
            raise PlanError(
                f"output column {emit.column!r} clashes with a kept input column of the same name: drop it from --keep"
            )
        taken.add(emit.column)
    image = any(f.kind == "image" for f in feeds)
    rows = batch_rows or (DEFAULT_IMAGE_BATCH_ROWS if image else DEFAULT_BATCH_ROWS)
    if rows < 1:
        raise PlanError("--batch-rows must be at least 1")
    return Plan(
        model=manifest.name,
        version=manifest.version,
        manifest=manifest,
        archive=archive,
        feeds=feeds,
        emits=emits,
        keep=keep,
        batch_rows=rows,
        tabular=all(_is_scalar(s) for s in manifest.inputs),
        label_output=labelled,
        fail_on_error=fail_on_error,
    )


def _names(columns: dict[str, str]) -> str:
    return "columns: " + ", ".join(columns) if columns else "no columns"


def is_column_list(value: str) -> bool:
    """``--map INPUT=VALUE`` names several columns when VALUE is a comma list or holds a glob."""
    return "," in value or any(c in value for c in "*?[")


def expand_columns(value: str, columns: dict[str, str]) -> list[str]:
    """A comma list of column names and globs, each glob expanded in the table's column order."""
    names: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            raise PlanError(f"--map ...={value}: an empty column name in the list")
        if any(c in part for c in "*?["):
            matched = [c for c in columns if fnmatch.fnmatchcase(c, part)]
            if not matched:
                raise PlanError(f"--map ...={value}: no column matches {part!r} (the input has {_names(columns)})")
            names += matched
        else:
            names.append(part)
    seen = set()
    for name in names:
        if name in seen:
            raise PlanError(f"--map ...={value}: column {name!r} is named twice")
        seen.add(name)
    return names


def _columns_feed(manifest: Manifest, spec: TensorSpec, value: str, columns: dict[str, str]) -> Feed:
    """An ``[N, K]`` input fed by K numeric columns, one per feature."""
    shape = f"{spec.datatype} {list(spec.shape)}"
    where = f"model {manifest.name!r} input {spec.name!r} ({shape}, --map {spec.name}={value})"
    if manifest.format == "pmml" or len(spec.shape) != 2 or spec.datatype == "BYTES":
        raise PlanError(f"{where}: only a numeric [N, K] input can be fed from several columns")
    names = expand_columns(value, columns)
    missing = [n for n in names if n not in columns]
    if missing:
        raise PlanError(f"{where} needs a column {missing[0]!r}; the input has {_names(columns)}")
    wrong = [n for n in names if columns[n] != "numeric"]
    if wrong:
        raise PlanError(f"{where}: column {wrong[0]!r} must be a numeric column, not {columns[wrong[0]]}")
    width = spec.shape[1]
    if width >= 0 and len(names) != width:
        raise PlanError(f"{where}: the input takes {width} values per row, and {len(names)} columns were named")
    return Feed(spec.name, names[0], "columns", spec, tuple(names))


def _feed(
    manifest: Manifest, spec: TensorSpec, mapping: dict[str, str], columns: dict[str, str], image_input: str | None
) -> Feed:
    if spec.name in mapping and is_column_list(mapping[spec.name]) and mapping[spec.name] not in columns:
        return _columns_feed(manifest, spec, mapping[spec.name], columns)
    column = mapping.get(spec.name, spec.name)
    if column not in columns:
        hint = "" if spec.name in mapping else f" (or name one with --map {spec.name}=COLUMN)"
        raise PlanError(
            f"model {manifest.name!r} input {spec.name!r} needs a column {column!r}{hint}; "
            f"the input has {_names(columns)}"
        )
    kind = columns[column]
    where = f"column {column!r} (for input {spec.name!r}, {spec.datatype} {list(spec.shape)})"
    if manifest.format == "pmml":
        if kind in ("array", "other"):
            raise PlanError(f"{where} must hold one value per row, not an {kind} column")
        return Feed(spec.name, column, "field", spec)
    if spec.name == image_input and kind == "binary":
        return Feed(spec.name, column, "image", spec)
    if _is_scalar(spec):
        want = ("string", "binary") if spec.datatype == "BYTES" else ("numeric",)
        if kind not in want:
            raise PlanError(f"{where} must be a {' or '.join(want)} column, not {kind}")
        return Feed(spec.name, column, "scalar", spec)
    if kind != "array":
        extra = " or the bytes of an encoded image" if spec.name == image_input else ""
        raise PlanError(f"{where} must be an array column{extra}, not {kind}")
    return Feed(spec.name, column, "array", spec)
