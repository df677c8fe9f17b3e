"""PMML stays PMML: parse and check the document with pypmml, record its fields, copy it.

There is no second scorer to compare against, so verification (``convert.verify``) can only prove
that the runtime's own PMML engine loads the file and scores sample rows (from ``--sample CSV`` or
synthetic rows drawn from the recorded fields); the recorded parity says so. The helpers for
sample rows live here because the scikit-learn converter reuses them for the PMML it writes.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import numpy as np

from bundle.manifest import Manifest, TensorSpec
from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions, MakeInputs, TabularOptions
from runtime.errors import ModelLoadError

MAX_SAMPLE_ROWS = 10_000  # a --sample CSV larger than this is truncated (and the notes say so)


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    target = Path(workdir) / "model.pmml"
    shutil.copyfile(source, target)
    manifest = describe_pmml(target, source)
    notes = [
        "PMML passes through unchanged: pypmml is the only scorer, so verification proves that the runtime's "
        "PMML engine loads the document and scores the sample rows, not numerical parity"
    ]
    make_inputs, sample_note = sample_inputs(manifest.inputs, options.of(TabularOptions).sample_csv, ranges={})
    notes.append(sample_note)
    return Converted(
        model_path=target,
        format="pmml",
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        source_format="pmml",
        converters={"pypmml": _version("pypmml")},
        max_batch_size=-1,
        target=manifest.target,
        notes=notes,
        make_inputs=make_inputs,
    )


def describe_pmml(path: Path, shown_as: Path | None = None) -> Manifest:
    """The fields of a PMML document, read exactly as the runtime engine reads them."""
    from runtime.engines import pmml as engine  # starts the JVM: only inside the conversion child

    try:
        model = engine.load_model(path)
        manifest = engine.describe(model, path, name=path.stem)
    except ModelLoadError as exc:
        raise ConversionError(f"{shown_as or path}: not a PMML document pypmml can score: {exc}") from None
    if not manifest.inputs:
        raise ConversionError(f"{shown_as or path}: the PMML model has no input fields")
    if not manifest.outputs:
        raise ConversionError(f"{shown_as or path}: the PMML model has no output or target field")
    return manifest


# ---- sample rows ---------------------------------------------------------------------------------
Ranges = dict[str, tuple[float, float]]


def sample_inputs(specs: list[TensorSpec], sample_csv: Path | None, ranges: Ranges) -> tuple[MakeInputs, str]:
    """``make_inputs`` for verification and a note saying where the rows came from."""
    if sample_csv is not None:
        columns = read_sample_csv(Path(sample_csv), specs)
        rows = len(next(iter(columns.values())))
        note = f"verified on {rows} rows of {Path(sample_csv).name}"
        if rows == MAX_SAMPLE_ROWS:
            note += f" (truncated to the first {MAX_SAMPLE_ROWS})"
        return (lambda seed, batch: {k: v.copy() for k, v in columns.items()}), note

    def synthetic(seed: int, batch: int) -> dict[str, np.ndarray]:
        return synthetic_rows(specs, max(batch, 32), seed, ranges)

    numbers = "numbers from fitted ranges" if ranges else "numbers standard normal"
    return synthetic, f"verified on synthetic rows: categories from the allowed values, {numbers}"


def synthetic_rows(specs: list[TensorSpec], rows: int, seed: int, ranges: Ranges) -> dict[str, np.ndarray]:
    """Seeded rows the model should accept: categorical values from the allowed values, numbers
    uniform in the field's plausible range (fitted statistics when known, else standard normal)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.datatype == "BYTES":
            pool = spec.allowed_values or ["a", "b", "c"]
            columns[spec.name] = np.array([pool[i] for i in rng.integers(0, len(pool), rows)], dtype=object)
        elif spec.allowed_values:
            pool_numbers = np.array([float(v) for v in spec.allowed_values])
            columns[spec.name] = pool_numbers[rng.integers(0, len(pool_numbers), rows)]
        elif spec.name in ranges:
            low, high = ranges[spec.name]
            columns[spec.name] = rng.uniform(low, high, rows)
        else:
            columns[spec.name] = rng.standard_normal(rows)
        if spec.datatype == "FP32":
            columns[spec.name] = columns[spec.name].astype(np.float32)
    return columns


def read_sample_csv(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """One column per field from a CSV with a header row; extra columns (e.g. the label) are ignored."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, nrows=MAX_SAMPLE_ROWS, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"--sample {path}: cannot read the CSV: {exc}") from None
    missing = [s.name for s in specs if s.name not in frame.columns]
    if missing:
        raise ConversionError(
            f"--sample {path}: no column for field(s) {', '.join(missing)} (header: {', '.join(frame.columns)})"
        )
    if frame.empty:
        raise ConversionError(f"--sample {path}: the CSV has a header but no rows")
    columns: dict[str, np.ndarray] = {}
    for spec in specs:
        text = frame[spec.name]
        if spec.datatype == "BYTES":
            columns[spec.name] = text.to_numpy(dtype=object)
            continue
        numbers = pd.to_numeric(text, errors="coerce")
        if numbers.isna().any():
            row = int(numbers.isna().to_numpy().argmax())
            raise ConversionError(
                f"--sample {path}: field {spec.name!r} is numeric, but data row {row + 1} holds {text.iloc[row]!r}"
            )
        columns[spec.name] = numbers.to_numpy(dtype=np.float32 if spec.datatype == "FP32" else np.float64)
    return columns


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
