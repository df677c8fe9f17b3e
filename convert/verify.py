"""Prove the served file computes what the source model computes, before anything is written.

The served side runs through the same engine code the server uses (``runtime.engines.load_engine``,
validate then predict), so a model that verifies here is the model that serves. Inputs are seeded
random tensors shaped by the input specs (or the converter's own ``make_inputs``), batch >= 2 so a
broken batch axis shows. Pass/fail follows ``numpy.allclose``: ``|served - source| <= atol + rtol * |source|``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from bundle.manifest import MODEL_FILES, Manifest, Parity, TensorSpec
from convert.errors import VerificationError
from convert.formats import Converted, ConvertOptions
from convert.toolkit import DEFAULT_INTEGER_BOUND, FREE_DIM, sample_inputs
from runtime.engines import EngineOptions, load_engine

INT_HIGH = DEFAULT_INTEGER_BOUND  # integer inputs are drawn from [0, INT_HIGH): safe embedding indices


def manifest_for(converted: Converted, max_batch_size: int, name: str = "model") -> Manifest:
    """The manifest the engine sees; ``max_batch_size`` is used for a dynamic batch axis (-1)."""
    return Manifest(
        name=name,
        format=converted.format,
        inputs=converted.inputs,
        outputs=converted.outputs,
        max_batch_size=max_batch_size if converted.max_batch_size < 0 else converted.max_batch_size,
        image=converted.image,
        labels=converted.labels,
        label_output=converted.label_output,
        target=converted.target,
    )


def random_inputs(specs: list[TensorSpec], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded tensors for ``specs``; a -1 first axis becomes ``batch``, other -1 axes ``FREE_DIM``."""
    return sample_inputs([(s.name, s.datatype, s.shape) for s in specs], seed, batch, INT_HIGH, FREE_DIM)


def verify(converted: Converted, options: ConvertOptions) -> Parity:
    """Compare source and served outputs; raise VerificationError naming the worst output."""
    batch = max(2, options.verify_batch)
    if converted.max_batch_size > 0:
        batch = min(batch, converted.max_batch_size)
    if converted.make_inputs is not None:
        inputs = converted.make_inputs(options.seed, batch)
    else:
        inputs = random_inputs(converted.inputs, batch if converted.max_batch_size != 0 else 1, options.seed)
    samples = len(next(iter(inputs.values()))) if inputs else 0
    served = run_served(converted, inputs, options.max_batch_size)
    if converted.reference is None:
        return Parity(
            verified=False,
            samples=samples,
            notes=[
                *converted.notes,
                f"no source framework to compare against: the file loaded and ran on {samples} samples",
            ],
        )
    expected = converted.reference({k: v.copy() for k, v in inputs.items()})
    return compare(expected, served, converted, options, samples)


def run_served(converted: Converted, inputs: dict[str, np.ndarray], max_batch_size: int) -> dict[str, np.ndarray]:
    manifest = manifest_for(converted, max_batch_size)
    with tempfile.TemporaryDirectory(prefix="modelport-verify-") as tmp:
        version_dir = _version_dir(converted.model_path, MODEL_FILES[converted.format], Path(tmp))
        try:
            engine = load_engine(converted.format, version_dir, manifest, EngineOptions(warmup=False))
        except Exception as exc:
            raise VerificationError(
                f"{converted.model_path.name}: the served engine cannot load the converted model: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        try:
            return engine.predict(engine.validate(dict(inputs)))
        except Exception as exc:
            raise VerificationError(
                f"{converted.model_path.name}: the served engine failed on sample inputs "
                f"({_describe(inputs)}): {type(exc).__name__}: {exc}"
            ) from None
        finally:
            engine.close()


def _version_dir(model_path: Path, file_name: str, tmp: Path) -> Path:
    """A directory holding the model under the file name the engine expects."""
    if model_path.name == file_name:
        return model_path.parent
    target = tmp / file_name
    try:
        target.hardlink_to(model_path)
    except OSError:
        shutil.copyfile(model_path, target)
    return tmp


def _describe(inputs: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in inputs.items())


def compare(
    expected: dict[str, np.ndarray],
    served: dict[str, np.ndarray],
    converted: Converted,
    options: ConvertOptions,
    samples: int,
) -> Parity:
    per_output: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    agreements: list[float] = []
    max_abs = max_rel = 0.0
    for spec in converted.outputs:
        name = spec.name
        if name not in expected:
            raise VerificationError(f"output {name!r}: the source model did not produce it (got {sorted(expected)})")
        if name not in served:
            raise VerificationError(f"output {name!r}: the served model did not produce it (got {sorted(served)})")
        want, got = np.asarray(expected[name]), np.asarray(served[name])
        if want.shape != got.shape and want.size == got.size and name not in converted.label_outputs:
            want = want.reshape(got.shape)  # e.g. (N,) vs (N, 1): same values, different framing
        if want.shape != got.shape:
            raise VerificationError(
                f"output {name!r}: served shape {list(got.shape)} differs from the source's {list(want.shape)}"
            )
        if name in converted.label_outputs or not _numeric(want) or not _numeric(got):
            agreement = _label_agreement(want, got)
            agreements.append(agreement)
            per_output[name] = {"label_agreement": agreement}
            if agreement < 1.0:
                failures.append(f"output {name!r}: labels agree on {agreement:.1%} of {samples} rows (need 100%)")
            continue
        abs_err, rel_err, ok = _errors(want, got, options.atol, options.rtol)
        per_output[name] = {"max_abs_error": abs_err, "max_rel_error": rel_err}
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
        if not ok:
            failures.append(
                f"output {name!r}: max abs error {abs_err:.3g}, max rel error {rel_err:.3g} "
                f"exceed atol {options.atol:g} + rtol {options.rtol:g} x |source|"
            )
    if failures:
        raise VerificationError(
            f"{converted.model_path.name}: the converted model's outputs differ from the source framework "
            f"({converted.source_format}) on {samples} seeded random samples: " + "; ".join(failures)
        )
    return Parity(
        verified=True,
        samples=samples,
        atol=options.atol,
        rtol=options.rtol,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        label_agreement=min(agreements) if agreements else None,
        per_output=per_output,
        notes=list(converted.notes),
    )


def _numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "biuf"


def _errors(want: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    want64, got64 = want.astype(np.float64), got.astype(np.float64)
    if want64.size == 0:
        return 0.0, 0.0, True
    nan_mismatch = bool(np.any(np.isnan(want64) != np.isnan(got64)))
    both = ~(np.isnan(want64) | np.isnan(got64))
    diff = np.abs(want64 - got64)
    diff = np.where(both & np.isfinite(diff), diff, np.where(both & (want64 != got64), np.inf, 0.0))
    # relative error where it means something: elements whose source magnitude is above atol
    magnitude = np.abs(np.where(both, want64, 0.0))
    rel = np.where(magnitude > atol, diff / np.maximum(magnitude, max(atol, 1e-300)), 0.0)
    ok = not nan_mismatch and bool(np.all(diff <= atol + rtol * magnitude))
    abs_err = float(diff.max()) if not nan_mismatch else float("inf")
    return abs_err, float(rel.max()), ok


def _label_agreement(want: np.ndarray, got: np.ndarray) -> float:
    if want.size == 0:
        return 1.0
    rows_want = want.reshape(len(want), -1) if want.ndim else want.reshape(1, -1)
    rows_got = got.reshape(len(got), -1) if got.ndim else got.reshape(1, -1)
    same = [_as_text(a) == _as_text(b) for a, b in zip(rows_want, rows_got, strict=True)]
    return float(np.mean(same))


def _as_text(row: np.ndarray) -> list[str]:
    out = []
    for value in row.tolist():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        out.append(str(value))
    return out
