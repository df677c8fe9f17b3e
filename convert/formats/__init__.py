"""Source formats as plug-in objects, behind one registry.

A format is a ``SourceFormat``: its ``name`` (the value of ``--format`` and ``SourceInfo.format``),
its ``family`` (formats one model could be saved as: ``keras_h5`` and ``keras``), a one-line
``description`` for messages, ``sniff`` (does this file or directory hold a model of mine? by
reading bytes, never by loading a framework), ``locate`` (with ``--format`` forced: the path the
converter receives) and ``convert``. ``register`` adds one and refuses to replace an existing name
silently (sklearn-onnx's ``register_converter`` is the model: ``overwrite=True`` says it is meant).

The built-in formats register in ``convert.formats.builtin`` with their converter named by dotted
path, so that detection imports no framework; third-party formats arrive through the
``modelport.formats`` entry point group (an entry point names a ``SourceFormat`` object, or a
callable returning one) and are detected exactly like the built-ins. ``convert.detect`` is the
driver that asks every registered format in turn.

The pipeline (``convert.pipeline``) runs ``convert`` in a subprocess, verifies the ``Converted``
with ``convert.verify`` there, and carries only its picklable ``ConversionResult`` back.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

from bundle.manifest import ImagePreprocessing, TensorSpec

ENTRY_POINT_GROUP = "modelport.formats"
T = TypeVar("T")


@dataclass
class Detection:
    """``path`` is what the converter receives: the model file, or the directory for directory formats."""

    format: str
    path: Path
    detail: dict[str, Any] = field(default_factory=dict)


Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
MakeInputs = Callable[[int, int], dict[str, np.ndarray]]  # (seed, batch) -> inputs


@dataclass
class ImageOptions:
    """Command-line overrides for image preprocessing (None: the converter's guess)."""

    color_mode: str | None = None  # RGB | BGR | L
    scale: float | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: str | None = None  # NHWC | NCHW
    disable: bool = False  # --no-image: never treat an input as an image


# ---- options each format reads on its own (``ConvertOptions.of``) ---------------------------------
# A field's ``flag`` metadata names the command-line flag, for "--signature applies to ..." errors.
@dataclass
class GraphOptions:
    """TF1 graphs (frozen GraphDef, checkpoint, SavedModel without a signature)."""

    inputs: list[str] | None = field(default=None, metadata={"flag": "--inputs"})


@dataclass
class SignatureOptions:
    """SavedModels."""

    signature: str | None = field(default=None, metadata={"flag": "--signature"})


@dataclass
class TabularOptions:
    """scikit-learn and PMML: what to serve and which rows to verify on."""

    target: Literal["onnx", "pmml"] | None = field(default=None, metadata={"flag": "--target"})  # sklearn
    sample_csv: Path | None = field(default=None, metadata={"flag": "--sample"})


FormatOptions = GraphOptions | SignatureOptions | TabularOptions


@dataclass
class ConvertOptions:
    """Options every format understands, plus ``format_options``: one object per option class
    (``GraphOptions``...), read by the formats that declare it (``Format.options``). A post-
    conversion step (quantization, say) adds its own field here, not a format's."""

    format: str | None = None  # --format override; None: detected
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # --input-shape NAME=d0,d1,...
    input_dtype: str = "FP32"  # --input-dtype, V2 datatype of --input-shape inputs
    outputs: list[str] | None = None  # --outputs
    opset: int = 17
    format_options: list[Any] = field(default_factory=list)  # GraphOptions(...), TabularOptions(...)
    image: ImageOptions = field(default_factory=ImageOptions)
    labels: list[str] | None = None  # --labels FILE (one per line)
    verify: bool = True
    atol: float = 1e-4
    rtol: float = 1e-3
    verify_batch: int = 4
    seed: int = 0
    # Set by the pipeline: the unpacked model root, so a converter may look beside the model file
    # (a pickled PyTorch module's class file) without ever reaching outside what was handed over.
    source_root: Path | None = None
    max_batch_size: int = 64  # --max-batch-size: recorded for models with a dynamic batch axis
    quantize: Literal["dynamic", "static"] | None = None  # --quantize (convert/quantize.py)
    calibration: Path | None = None  # --calibration DIR|CSV for static quantization
    min_agreement: float = 0.99  # --min-agreement: quantized top-1 agreement with the float model
    quant_rtol: float = 0.1  # --quant-rtol: quantized regression deviation, relative to the output's range

    def of(self, kind: type[T]) -> T:
        """The options of class ``kind`` that were given, else its defaults."""
        return next((o for o in self.format_options if isinstance(o, kind)), None) or kind()

    def given(self) -> list[tuple[str, type]]:
        """(flag, option class) of every format option set to other than its default."""
        found = []
        for value in self.format_options:
            for f in dataclasses.fields(value):
                if getattr(value, f.name) != f.default:
                    found.append((f.metadata.get("flag", f.name), type(value)))
        return found


@dataclass
class ConversionResult:
    """What crosses back from the conversion child: the written file and its description, all
    picklable. The pipeline builds the manifest from it."""

    model_path: Path  # model.onnx or model.pmml written inside workdir
    format: Literal["onnx", "pmml"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source_format: str
    converters: dict[str, str] = field(default_factory=dict)  # package -> version
    opset: int | None = None
    max_batch_size: int = -1  # -1: dynamic batch axis (written as a Triton max_batch_size); 0: none
    image: ImagePreprocessing | None = None
    labels: list[str] | None = None
    label_output: str | None = None
    target: str | None = None
    detail: dict = field(default_factory=dict)  # recorded in SourceInfo.detail (e.g. checkpoint step)
    notes: list[str] = field(default_factory=list)  # recorded in Parity.notes
    # Outputs compared as labels (exact match) rather than numerically.
    label_outputs: list[str] = field(default_factory=list)
    # onnxruntime's offline-optimised copy and its manifest record (convert/optimize.py)
    optimized_path: Path | None = None
    optimized: dict | None = None


@dataclass
class Converted(ConversionResult):
    """What a converter hands back: the result plus the callables that live only inside the
    conversion child (they hold the loaded source model) and are used to verify it there."""

    # The source framework's own prediction on ONNX-named inputs, returning ONNX-named outputs.
    reference: Predict | None = None
    # Sample inputs for verification; None: seeded random tensors from ``inputs`` specs.
    make_inputs: MakeInputs | None = None

    def result(self) -> ConversionResult:
        """The picklable part, for the parent process."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(ConversionResult)}
        return ConversionResult(**fields)


@runtime_checkable
class SourceFormat(Protocol):
    """What a format plug-in provides (see docs/convert.md, "Writing a format plug-in")."""

    name: str
    family: str
    description: str

    def sniff(self, path: Path) -> Detection | None:
        """A Detection when ``path`` (a file, or a directory) holds a model of this format; else None.
        Reads bytes only, never imports the framework, never raises on foreign input."""
        ...

    def locate(self, root: Path) -> Path:
        """With ``--format`` forcing this format: the path inside ``root`` the converter receives."""
        ...

    def convert(self, source: Path, options: ConvertOptions, workdir: Path) -> Converted:
        """Write ``workdir/model.onnx`` (or ``.pmml``) and describe it; runs in the conversion child."""
        ...

    # Optional members (looked up with getattr): ``options``, a tuple of the option classes the
    # converter reads with ``ConvertOptions.of``; ``add_arguments(group)``, its command-line flags;
    # ``options_from_args(namespace)``, the option object built from them.


@dataclass(frozen=True)
class Format:
    """A SourceFormat whose converter is named by ``"module:function"`` and imported only when it
    runs; ``sniffer`` and ``locator`` are plain functions (the defaults: never detected, and
    ``locate`` returning the root itself)."""

    name: str
    family: str
    description: str
    converter: str
    sniffer: Callable[[Path], Detection | None] | None = None
    locator: Callable[[Path], Path] | None = None
    options: tuple[type, ...] = ()  # the option classes its converter reads (ConvertOptions.of)

    def sniff(self, path: Path) -> Detection | None:
        return self.sniffer(path) if self.sniffer is not None else None

    def locate(self, root: Path) -> Path:
        return self.locator(root) if self.locator is not None else root

    def convert(self, source: Path, options: ConvertOptions, workdir: Path) -> Converted:
        module_name, _, function = self.converter.partition(":")
        return getattr(importlib.import_module(module_name), function)(source, options, workdir)


_registry: dict[str, SourceFormat] = {}
_loaded = False
_lock = threading.RLock()


def register(fmt: SourceFormat, *, overwrite: bool = False) -> SourceFormat:
    """Add ``fmt``; a second format with the same name is an error unless ``overwrite``."""
    missing = [a for a in ("name", "family", "description", "sniff", "locate", "convert") if not hasattr(fmt, a)]
    if missing:
        raise TypeError(f"{fmt!r} is not a SourceFormat: it lacks {', '.join(missing)}")
    with _lock:
        if fmt.name in _registry and not overwrite and _registry[fmt.name] is not fmt:
            raise ValueError(
                f"format {fmt.name!r} is already registered ({_registry[fmt.name]!r}); "
                f"pass overwrite=True to replace it"
            )
        _registry[fmt.name] = fmt
    return fmt


def formats() -> list[SourceFormat]:
    """Every registered format, built-ins first, then entry-point plug-ins, in registration order."""
    _load()
    with _lock:
        return list(_registry.values())


def get_format(name: str) -> SourceFormat:
    _load()
    try:
        return _registry[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; supported: {', '.join(sorted(_registry))}") from None


def get_converter(fmt: str) -> Callable[[Path, ConvertOptions, Path], Converted]:
    return get_format(fmt).convert


def _load() -> None:
    """Built-ins, then the entry-point plug-ins (once per process)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        importlib.import_module("convert.formats.builtin")
        _scan_entry_points()


def load_plugins() -> list[str]:
    """Register the formats of the ``modelport.formats`` entry point group; returns their names.
    Runs once by itself; call it again after installing a plug-in into a running process."""
    _load()
    return _scan_entry_points()


def unregister(name: str) -> None:
    """Remove a format (a plug-in uninstalled from a running process, a test's temporary one)."""
    with _lock:
        _registry.pop(name, None)


def _scan_entry_points() -> list[str]:
    names = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            fmt = loaded() if isinstance(loaded, type) or not hasattr(loaded, "sniff") else loaded
            register(fmt)
            names.append(fmt.name)
        except Exception as exc:  # one broken plug-in must not take every format down
            warnings.warn(f"modelport format plug-in {entry.value!r} not loaded: {exc}", stacklevel=2)
    return names
