"""``--quantize dynamic|static``: int8 quantization after conversion, served only if an accuracy gate passes.

Runs in the conversion child after the float model was verified against its source framework, on the float
ONNX file, with onnxruntime's own tooling:

1. ``quant_pre_process`` (shape inference and graph optimisation), as onnxruntime recommends before quantizing.
2. ``dynamic``: ``quantize_dynamic`` with int8 weights (activations are quantized per batch at run time; good
   for MatMul/Gemm-heavy models such as MLPs and transformers). ``static``: ``quantize_static`` in the QDQ
   format (uint8 activations and per-channel int8 weights), calibrated with MinMax on ``--calibration``: a
   directory of images (decoded exactly as the server will, for image models) or a CSV of rows (a header of
   input names for several inputs, otherwise the flattened single input), else on seeded random samples.

   Both modes write U8S8 (uint8 activations, int8 weights; ``TYPES``): x86's int8 dot-product instructions
   multiply unsigned by signed bytes, so onnxruntime runs U8S8 directly, while int8 activations (S8S8) must be
   converted first: on the benchmark MobileNetV2 a static S8S8 model ran no faster than the float one and the
   U8S8 one much faster (docs/convert.md has the figures). Static per-channel weights keep a 7-bit range
   (``reduce_range``), which onnxruntime's ``quantize_static`` guidance asks for on x86 CPUs without VNNI (their
   u8 x s8 instruction adds pairs of products into 16 bits, which full-range per-channel weights can saturate):
   a model may be served on a CPU other than the one that converted it, where the gate did not run. Dynamic
   mode's per-tensor weights keep onnxruntime's default full range.
3. The gate replaces exact parity, comparing the quantized with the float model on verification samples that
   are not the calibration samples: an output whose last axis has two or more entries (class scores, logits) must
   pick the same top-1 class on at least ``--min-agreement`` of the rows (default 0.99); any other output
   (a regression) must stay within ``--quant-rtol`` of the float output, relative to the float output's largest
   magnitude. A model that fails is refused with a ``VerificationError``, exactly as a parity failure is.

The manifest keeps the float model's parity with the source and adds ``parity.quantization``: the mode, the
calibration, the agreement and deviation measured, the gate and both file sizes.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bundle.manifest import Parity
from convert.cli import UsageError
from convert.errors import VerificationError
from convert.formats import Converted, ConvertOptions

MODES = ("dynamic", "static")
CALIBRATION_SAMPLES = 256  # seeded samples when no --calibration is given (MinMax: few samples clip the tails)
GATE_SAMPLES = 200  # rows the gate compares on (not the calibration rows); 0.99 then tolerates 2 flips
FLOAT_OPS = {"Softmax"}  # static: ops left in float (see apply)
TYPES = {  # what each mode writes, recorded in the manifest (see the module docstring)
    "dynamic": "U8S8: uint8 activations quantized per batch, per-tensor int8 weights",
    "static": "U8S8: uint8 activations, per-channel int8 weights in a 7-bit range",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def apply(converted: Converted, parity: Parity, options: ConvertOptions, workdir: Path) -> tuple[Converted, Parity]:
    """Quantize ``converted.model_path``, gate it, and return the quantized model with its record."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if converted.format != "onnx":
        raise UsageError(f"--quantize applies to ONNX models; this model is served as {converted.format}")
    mode = options.quantize
    float_path = converted.model_path
    prepared = workdir / "quantize-pre.onnx"
    quantized = workdir / "model.int8.onnx"
    try:
        quant_pre_process(str(float_path), str(prepared))
    except Exception as exc:  # onnxruntime's symbolic shape inference gives up on some graphs: quantize as is
        shutil.copyfile(float_path, prepared)
        parity.notes.append(f"quant_pre_process skipped: {type(exc).__name__}: {str(exc)[:200]}")
    calibration, described = _calibration(converted, options)
    try:
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(quantized), weight_type=QuantType.QInt8)
        else:
            quantize_static(
                str(prepared),
                str(quantized),
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                # class scores stay float: an int8 softmax output has 256 levels and ties the top classes
                op_types_to_quantize=[op for op in QDQRegistry if op not in FLOAT_OPS],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=True,
            )
    except Exception as exc:
        raise VerificationError(f"--quantize {mode}: onnxruntime could not quantize the model: {exc}") from None
    gate_inputs = _samples(converted, GATE_SAMPLES, options.seed + 1)
    expected = _run(float_path, gate_inputs)
    got = _run(quantized, gate_inputs)
    record = _gate(converted, expected, got, options)
    record.update(
        mode=mode,
        format="QDQ" if mode == "static" else "QOperator (dynamic)",
        types=TYPES[mode],
        calibration=described if mode == "static" else "none (dynamic: activations quantized at run time)",
        float_bytes=float_path.stat().st_size,
        quantized_bytes=quantized.stat().st_size,
    )
    parity.quantization = record
    return _replace_model(converted, quantized), parity


def _replace_model(converted: Converted, path: Path) -> Converted:
    import dataclasses

    return dataclasses.replace(converted, model_path=path)


# ---- samples ---------------------------------------------------------------------------------------------
def _samples(converted: Converted, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``count`` single-row feeds: the converter's own sample maker when it has one, else seeded random."""
    from convert.verify import random_inputs

    batch = 1 if converted.max_batch_size != 0 else None
    feeds = []
    for i in range(count):
        if converted.make_inputs is not None:
            feeds.append(converted.make_inputs(seed * 100_003 + i, 1))
        else:
            feeds.append(random_inputs(converted.inputs, batch or 1, seed * 100_003 + i))
    return feeds


def _calibration(converted: Converted, options: ConvertOptions) -> tuple[list[dict[str, np.ndarray]], str]:
    source = options.calibration
    if source is None:
        return _samples(converted, CALIBRATION_SAMPLES, options.seed), f"{CALIBRATION_SAMPLES} seeded random samples"
    if source.is_dir():
        return _images(converted, source), f"{source.name}/ (images)"
    if source.suffix.lower() == ".csv":
        return _csv_rows(converted, source), f"{source.name} (CSV rows)"
    raise UsageError(f"--calibration {source}: give a directory of images or a .csv file")


def _images(converted: Converted, directory: Path) -> list[dict[str, np.ndarray]]:
    from runtime.codecs.image import decode_image  # the server's own decoding: calibrate on what it will see

    if converted.image is None:
        raise UsageError(f"--calibration {directory}: a directory of images needs an image model")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--calibration {directory}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    feeds = []
    for path in files:
        try:
            tensor = decode_image(path.read_bytes(), converted.image, 40_000_000)
        except Exception as exc:
            raise UsageError(f"--calibration {path}: cannot decode it: {exc}") from None
        feeds.append({converted.image.input: tensor[None]})
    return feeds


def _csv_rows(converted: Converted, path: Path) -> list[dict[str, np.ndarray]]:
    from bundle.datatypes import Datatype

    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise UsageError(f"--calibration {path}: the file has no rows")
    specs = converted.inputs
    names = [s.name for s in specs]
    header = rows[0] if set(rows[0]) & set(names) else None
    body = rows[1:] if header else rows
    feeds = []
    for line, row in enumerate(body, start=2 if header else 1):
        try:
            values = [float(v) for v in row]
        except ValueError:
            raise UsageError(f"--calibration {path}, line {line}: not all values are numbers") from None
        feed = {}
        for spec in specs:
            shape = [1 if d < 0 else d for d in spec.shape] if spec.shape else [1]
            if header:
                if spec.name not in header:
                    raise UsageError(f"--calibration {path}: no column {spec.name!r} (the model's inputs: {names})")
                data = [values[header.index(spec.name)]]
                shape = [1] * max(1, len(spec.shape))
            elif len(specs) == 1:
                data = values
            else:
                raise UsageError(f"--calibration {path}: several inputs ({names}): the first row must name them")
            array = np.asarray(data, dtype=Datatype(spec.datatype).numpy)
            if array.size != int(np.prod(shape)):
                raise UsageError(
                    f"--calibration {path}, line {line}: {array.size} values, input {spec.name!r} needs "
                    f"{int(np.prod(shape))}"
                )
            feed[spec.name] = array.reshape(shape)
        feeds.append(feed)
    return feeds


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._iter = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def _run(path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            results[name].append(np.asarray(value))
    return {n: np.concatenate(v) if v and v[0].ndim else np.stack(v) for n, v in results.items()}


# ---- the gate --------------------------------------------------------------------------------------------
def _gate(
    converted: Converted, expected: dict[str, np.ndarray], got: dict[str, np.ndarray], options: ConvertOptions
) -> dict[str, Any]:
    per_output: dict[str, dict[str, float]] = {}
    failures = []
    agreements, deviations = [], []
    for spec in converted.outputs:
        want, have = expected[spec.name], got[spec.name]
        if want.dtype.kind not in "fiu":
            continue  # labels as strings: the scores beside them are gated
        want, have = want.astype(np.float64), have.astype(np.float64)
        if want.ndim >= 2 and want.shape[-1] >= 2:
            agreement = float(np.mean(want.argmax(-1) == have.argmax(-1)))
            per_output[spec.name] = {"top1_agreement": agreement}
            agreements.append(agreement)
            if agreement < options.min_agreement:
                failures.append(
                    f"output {spec.name!r}: top-1 agreement with the float model {agreement:.1%} "
                    f"< --min-agreement {options.min_agreement:.1%}"
                )
        scale = float(np.max(np.abs(want))) or 1.0
        deviation = float(np.max(np.abs(have - want))) / scale if want.size else 0.0
        per_output.setdefault(spec.name, {})["max_rel_deviation"] = deviation
        deviations.append(deviation)
        if not (want.ndim >= 2 and want.shape[-1] >= 2) and deviation > options.quant_rtol:
            failures.append(
                f"output {spec.name!r}: deviation from the float model {deviation:.3g} of its range "
                f"> --quant-rtol {options.quant_rtol:g}"
            )
    samples = len(next(iter(expected.values()))) if expected else 0
    if failures:
        raise VerificationError(
            f"--quantize {options.quantize}: the quantized model is refused on {samples} samples: "
            + "; ".join(failures)
            + " (lower the gate, give --calibration data, or try the other mode)"
        )
    return {
        "samples": samples,
        "top1_agreement": min(agreements) if agreements else None,
        "max_rel_deviation": max(deviations) if deviations else None,
        "min_agreement": options.min_agreement,
        "quant_rtol": options.quant_rtol,
        "per_output": per_output,
    }
