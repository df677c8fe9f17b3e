"""What the TorchScript and pickled-module converters share.

A PyTorch file records neither its inputs' names nor their shapes, so the user supplies both with
``--input-shape NAME=d0,d1,...`` (and ``--input-dtype``); NAME becomes the ONNX input's name. The
example batch is replaced by 2 when exporting: torch.export treats a size-1 dimension as a constant,
so a batch of 1 would contradict the dynamic batch axis the runtime batches on.

torch is imported inside functions so that importing this module (e.g. for the registry) stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bundle.datatypes import Datatype
from bundle.manifest import TensorSpec
from convert import toolkit
from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.toolkit import DEFAULT_INTEGER_BOUND

EXPORT_BATCH = 2
# Export (and trace) on other rows than verification draws from ``options.seed``: a traced branch
# that only the example took must meet fresh inputs to be caught.
EXPORT_SEED_OFFSET = 1000
# The dynamo exporter has no implementations below this opset; asking for less only adds a failing
# version conversion, so it is raised (and the raise noted) instead.
DYNAMO_MIN_OPSET = 18

# The V2 datatypes a torch tensor can be made of (torch has no unsigned types beyond uint8).
TORCH_INPUT_DATATYPES = ("BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64")
INPUT_SHAPE_HELP = (
    "give one --input-shape NAME=d0,d1,... per forward() argument, in the argument order "
    "(d0 is the batch axis, served as dynamic), e.g. --input-shape x=1,3,224,224; "
    "integer inputs also need --input-dtype, e.g. --input-shape ids=1,16 --input-dtype INT64"
)


@dataclass(frozen=True)
class ExampleInput:
    """One forward() argument as the user described it; ``shape[0]`` is the batch axis."""

    name: str
    shape: tuple[int, ...]
    datatype: str

    @property
    def numpy_dtype(self) -> np.dtype:
        return Datatype(self.datatype).numpy


# ---- example inputs ---------------------------------------------------------------------------
def parse_input_dtypes(spec: str, names: Sequence[str], source: Path) -> dict[str, str]:
    """``FP32`` applies to every input; ``ids=INT64,x=FP32`` sets them one by one (others FP32)."""
    spec = (spec or "FP32").strip()
    if "=" not in spec:
        return dict.fromkeys(names, _checked_dtype(spec, source))
    dtypes = dict.fromkeys(names, "FP32")
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, dtype = item.partition("=")
        if name.strip() not in dtypes:
            raise ConversionError(
                f"{source}: --input-dtype names {name.strip()!r}, which is not an --input-shape input "
                f"({', '.join(names)})"
            )
        dtypes[name.strip()] = _checked_dtype(dtype, source)
    return dtypes


def _checked_dtype(dtype: str, source: Path) -> str:
    dtype = dtype.strip().upper()
    if dtype not in TORCH_INPUT_DATATYPES:
        raise ConversionError(
            f"{source}: --input-dtype {dtype!r} is not supported for PyTorch inputs; use one of "
            f"{', '.join(TORCH_INPUT_DATATYPES)}"
        )
    return dtype


def example_inputs(options: ConvertOptions, source: Path, fmt: str) -> list[ExampleInput]:
    """The forward() arguments from ``--input-shape``, validated; raises with the flag's usage."""
    if not options.input_shapes:
        raise ConversionError(f"{source}: a {fmt} model does not record its input names or shapes; {INPUT_SHAPE_HELP}")
    dtypes = parse_input_dtypes(options.input_dtype, list(options.input_shapes), source)
    examples = []
    for name, dims in options.input_shapes.items():
        dims = [int(d) for d in dims]
        if not dims:
            raise ConversionError(f"{source}: --input-shape {name}= has no dimensions; {INPUT_SHAPE_HELP}")
        if any(d < 1 for d in dims[1:]) or dims[0] < -1 or dims[0] == 0:
            raise ConversionError(
                f"{source}: --input-shape {name}={','.join(map(str, dims))}: dimensions must be positive "
                f"(only the batch axis d0 may be -1)"
            )
        examples.append(ExampleInput(name, tuple(dims), dtypes[name]))
    return examples


def integer_input_bound(module: Any) -> int:
    """Random integer inputs must be valid indices: stay below the smallest embedding table.

    Works for eager, scripted and traced modules alike (the latter keep ``original_name``)."""
    bounds = []
    for sub in module.modules():
        kind = getattr(sub, "original_name", None) or type(sub).__name__
        weight = getattr(sub, "weight", None)
        if kind in ("Embedding", "EmbeddingBag") and weight is not None and weight.dim() == 2:
            bounds.append(int(weight.shape[0]))
    return max(1, min(bounds)) if bounds else DEFAULT_INTEGER_BOUND


def sample_inputs(examples: Sequence[ExampleInput], seed: int, batch: int, integer_bound: int) -> dict[str, np.ndarray]:
    """Seeded inputs shaped like the examples with ``batch`` rows (``convert.toolkit.sample_inputs``)."""
    specs = [(e.name, e.datatype, (None, *e.shape[1:])) for e in examples]
    return toolkit.sample_inputs(specs, seed, batch, integer_bound)


# ---- outputs and the torch reference ---------------------------------------------------------
def flatten_outputs(result: Any, source: Path) -> tuple[list[Any], list[str] | None]:
    """forward()'s result as a flat list of tensors, in the order the ONNX exporters flatten it,
    plus the dict keys when the result is one flat dict of tensors (the natural output names)."""
    import torch

    if isinstance(result, dict) and all(isinstance(v, torch.Tensor) for v in result.values()):
        return list(result.values()), [str(k) for k in result]
    flat: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat.append(value)
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        else:
            raise ConversionError(
                f"{source}: forward() returned a {type(value).__name__}; only tensors and (nested) "
                f"tuples, lists or dicts of tensors can be exported"
            )

    walk(result)
    if not flat:
        raise ConversionError(f"{source}: forward() returned no tensor")
    return flat, None


def output_names(count: int, keys: list[str] | None, options: ConvertOptions, source: Path) -> list[str]:
    """``--outputs`` when given (one per tensor), else dict keys, else ``output`` / ``output_0..n``."""
    if options.outputs:
        if len(options.outputs) != count:
            raise ConversionError(
                f"{source}: --outputs names {len(options.outputs)} tensors ({', '.join(options.outputs)}) "
                f"but forward() returns {count}"
            )
        return list(options.outputs)
    if keys and len(set(keys)) == count:
        return keys
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def to_torch(arrays: dict[str, np.ndarray], examples: Sequence[ExampleInput]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(arrays[e.name])) for e in examples)


def run_module(module: Any, args: tuple[Any, ...], examples: Sequence[ExampleInput], source: Path) -> Any:
    """Call forward() once, turning a shape/dtype mismatch into a message about --input-shape."""
    import torch

    try:
        with torch.no_grad():
            return module(*args)
    except Exception as exc:
        described = ", ".join(f"{e.name}={','.join(map(str, e.shape))} {e.datatype}" for e in examples)
        raise ConversionError(
            f"{source}: forward() failed on the example inputs ({described}): {first_line(exc)}. "
            f"Check that --input-shape gives one input per forward() argument, in order, "
            f"with the right shape, and --input-dtype the right type"
        ) from exc


def make_reference(module: Any, examples: Sequence[ExampleInput], names: Sequence[str], source: Path):
    """The module's own prediction on ONNX-named numpy inputs, returning ONNX-named outputs."""

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        flat, _ = flatten_outputs(run_module(module, to_torch(inputs, examples), examples, source), source)
        return {name: tensor.detach().cpu().numpy() for name, tensor in zip(names, flat, strict=True)}

    return predict


# ---- export -----------------------------------------------------------------------------------
class ExportLog(toolkit.Captured):
    def tracer_warnings(self) -> list[str]:
        """torch.jit's warnings that the trace may not generalise (a tensor read as a Python value)."""
        import torch

        found = [
            str(w.message).strip().splitlines()[0]
            for w in self.warnings
            if issubclass(w.category, torch.jit.TracerWarning)
        ]
        return list(dict.fromkeys(found))


@contextlib.contextmanager
def quiet_export() -> Iterator[ExportLog]:
    """The exporters print progress and deprecation chatter to stdout/stderr and the log; keep it
    (for error messages and tracing warnings) but off the user's terminal."""
    with toolkit.captured({"torch.onnx": logging.ERROR}, record_warnings=True) as log:
        yield ExportLog(log.output, log.warnings)


def export_torchscript_exporter(
    module: Any, args: tuple[Any, ...], examples: Sequence[ExampleInput], names: Sequence[str], path: Path, opset: int
) -> list[str]:
    """The TorchScript-based exporter: the only one that accepts ScriptModules. An eager module is
    traced on the way; the tracer's warnings are returned, as they flag frozen branches or shapes."""
    import torch

    axes = {name: {0: "batch"} for name in [*(e.name for e in examples), *names]}
    with quiet_export() as log:
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=[e.name for e in examples],
            output_names=list(names),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return log.tracer_warnings()


def export_dynamo(
    module: Any, args: tuple[Any, ...], examples: Sequence[ExampleInput], names: Sequence[str], path: Path, opset: int
) -> list[str]:
    """The torch.export-based exporter, with one shared dynamic batch dimension for all inputs."""
    import torch

    batch = torch.export.Dim("batch")
    with quiet_export() as log:
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            verbose=False,
            input_names=[e.name for e in examples],
            output_names=list(names),
            dynamic_shapes=tuple({0: batch} for _ in examples),
            opset_version=max(opset, DYNAMO_MIN_OPSET),
            external_data=False,
        )
    return log.tracer_warnings()


# ---- the Converted record ---------------------------------------------------------------------
def onnx_specs(
    path: Path, examples: Sequence[ExampleInput], names: Sequence[str], source: Path
) -> tuple[list[TensorSpec], list[TensorSpec], int]:
    """Input/output specs and opset read back from the written graph (the batch axis forced to -1),
    after checking that the exporter kept every name we asked for."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph_inputs = [i.name for i in model.graph.input]
    graph_outputs = [o.name for o in model.graph.output]
    expected_inputs = [e.name for e in examples]
    if graph_inputs != expected_inputs:
        missing = [n for n in expected_inputs if n not in graph_inputs]
        raise ConversionError(
            f"{source}: the exported graph has inputs {graph_inputs}, expected {expected_inputs}"
            + (f"; forward() does not use {missing}, so drop them from --input-shape" if missing else "")
        )
    if graph_outputs != list(names):
        raise ConversionError(f"{source}: the exported graph has outputs {graph_outputs}, expected {list(names)}")

    inputs = [toolkit.tensor_spec(v, source) for v in model.graph.input]
    outputs = [toolkit.tensor_spec(v, source) for v in model.graph.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return inputs, outputs, opset


def converter_versions() -> dict[str, str]:
    import onnx
    import onnxscript
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def export_module(
    module: Any,
    examples: list[ExampleInput],
    options: ConvertOptions,
    source: Path,
    workdir: Path,
    *,
    source_format: str,
    exporters: Sequence[str],
    detail: dict[str, Any] | None = None,
) -> Converted:
    """Export ``module`` with the first exporter in ``exporters`` that succeeds ("dynamo" or
    "torchscript"), then describe the result. Every exporter's failure is kept for the error."""
    module.eval()
    bound = integer_input_bound(module)
    arrays = sample_inputs(examples, options.seed + EXPORT_SEED_OFFSET, EXPORT_BATCH, bound)
    args = to_torch(arrays, examples)
    flat, keys = flatten_outputs(run_module(module, args, examples, source), source)
    names = output_names(len(flat), keys, options, source)
    if keys is not None and tuple(exporters) == ("torchscript",):
        raise ConversionError(
            f"{source}: forward() returns a dict ({', '.join(keys)}), which the TorchScript exporter cannot "
            f"export; save a module that returns a tuple, or the eager module with torch.save(model) "
            f"(exported by the dynamo exporter, which names the outputs after the keys)"
        )

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    detail = dict(detail or {})
    notes: list[str] = []
    failures: list[str] = []
    export = {"dynamo": export_dynamo, "torchscript": export_torchscript_exporter}
    for position, exporter in enumerate(exporters):
        path.unlink(missing_ok=True)
        try:
            tracer_warnings = export[exporter](module, args, examples, names, path, options.opset)
        except Exception as exc:
            failures.append(f"{exporter} exporter: {first_line(exc)}")
            continue
        is_last = position == len(exporters) - 1
        disagreement = None if is_last else disagrees(path, module, examples, names, options, bound, source)
        if disagreement is not None:  # let the next exporter try; verification judges the last one
            failures.append(f"{exporter} exporter: {disagreement}")
            continue
        detail["exporter"] = exporter
        if tracer_warnings:
            detail["tracer_warnings"] = tracer_warnings[:5]
            notes.append(f"the trace may hold only the export example's branch or shape: {tracer_warnings[0]}")
        break
    else:
        path.unlink(missing_ok=True)
        raise ConversionError(f"{source}: torch.onnx.export failed: " + "; ".join(failures))
    if failures:
        detail["exporter_fallback_reason"] = failures[0]
        notes.append(f"fell back to the {detail['exporter']} exporter after: {failures[0]}")

    inputs, outputs, opset = onnx_specs(path, examples, names, source)
    if opset > options.opset:
        notes.append(f"opset {opset} written ({options.opset} requested; the {detail['exporter']} exporter's minimum)")
    elif opset != options.opset:
        notes.append(f"opset {opset} written ({options.opset} requested)")
    return Converted(
        model_path=path,
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        source_format=source_format,
        converters=converter_versions(),
        opset=opset,
        max_batch_size=-1 if all(o.shape for o in outputs) else 0,
        detail=detail,
        notes=notes,
        reference=make_reference(module, examples, names, source),
        make_inputs=lambda seed, batch: sample_inputs(examples, seed, batch, bound),
    )


def disagrees(
    path: Path,
    module: Any,
    examples: Sequence[ExampleInput],
    names: Sequence[str],
    options: ConvertOptions,
    integer_bound: int,
    source: Path,
) -> str | None:
    """A quick onnxruntime-vs-torch check (batch 3, unlike the export's 2) so that an export that
    loads but computes something else can fall back to another exporter; None when it agrees."""
    import onnxruntime

    inputs = sample_inputs(examples, options.seed + EXPORT_SEED_OFFSET + 1, EXPORT_BATCH + 1, integer_bound)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        served = session.run(list(names), inputs)
    except Exception as exc:
        return f"onnxruntime cannot run the result: {first_line(exc)}"
    expected = make_reference(module, examples, names, source)(inputs)
    for name, got in zip(names, served, strict=True):
        want = expected[name]
        if got.shape != want.shape:
            return f"output {name!r} has shape {list(got.shape)} in onnxruntime, {list(want.shape)} in torch"
        if not np.allclose(got, want, atol=options.atol, rtol=options.rtol, equal_nan=True):
            error = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            return f"output {name!r} differs from torch by up to {error:.3g}"
    return None


def model_file(source: Path, fmt: str) -> Path:
    """The one PyTorch file when ``source`` is a directory (an unpacked archive's model root)."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise ConversionError(f"{source}: no such file or directory")
    suffixes = {".pt", ".pth", ".pt2", ".pkl", ".bin", ".ckpt", ".jit", ".ts", ".torchscript", ".zip"}
    candidates = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if len(candidates) != 1:
        found = ", ".join(str(p.relative_to(source)) for p in candidates) or "none"
        raise ConversionError(
            f"{source}: expected exactly one {fmt} file (.pt, .pth, ...) in the directory, found {found}"
        )
    return candidates[0]


def first_line(exc: BaseException) -> str:
    """The innermost cause's first line: the exporters wrap the real reason in a generic banner."""
    return toolkit.first_line(exc, innermost=True, with_type=True)
