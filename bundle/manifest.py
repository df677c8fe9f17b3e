"""The bundle manifest: the one contract between convert/ (writes it) and runtime/ (reads it).

A repository follows Triton's layout so that Triton or KServe can serve it too::

    REPO/NAME/config.pbtxt              Triton config (ONNX bundles only)
    REPO/NAME/VERSION/model.onnx        or model.pmml
    REPO/NAME/VERSION/modelport.json    this manifest

The manifest lives beside the model file rather than beside config.pbtxt because everything in it
(sha256, parity figures, converter versions) describes one version's file; a manifest directly under
REPO/NAME/ is still read as a fallback for every version. A version directory holding only
``model.onnx`` serves too: the runtime derives the manifest from the graph (see ``engines.onnx``).

Only the standard library and ``bundle.datatypes`` (numpy) are imported here: convert/, runtime/ and
score/ all read bundles, and none of them may pull in anything heavy through this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bundle import datatypes

MANIFEST_FILE = "modelport.json"
SCHEMA_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "pmml": "model.pmml"}

ModelFormat = Literal["onnx", "pmml"]
Layout = Literal["NHWC", "NCHW"]
ColorMode = Literal["RGB", "BGR", "L"]


@dataclass
class TensorSpec:
    """One input or output. ``shape`` uses -1 for a variable dimension (the batch axis included)."""

    name: str
    datatype: str
    shape: list[int]
    # PMML fields only: the field's optype and, for categorical fields, the values it accepts.
    optype: str | None = None
    allowed_values: list[str] | None = None
    # The name the source framework used, when serving renamed it (tf2onnx's "x:0", "unk__12").
    source_name: str | None = None

    def __post_init__(self) -> None:
        if datatypes.parse(self.datatype) is None:
            raise ValueError(f"tensor {self.name!r}: {self.datatype!r} is not a V2 datatype")
        self.shape = [int(d) for d in self.shape]


@dataclass
class ImagePreprocessing:
    """How an encoded image becomes the tensor for ``input``.

    pixel values (0..255, after colour conversion and resize) become ``(pixel * scale - mean) / std``
    per channel, cast to ``datatype`` and laid out as ``layout`` with a leading batch axis.
    """

    input: str
    layout: Layout
    height: int
    width: int
    color_mode: ColorMode = "RGB"
    datatype: str = "FP32"
    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3


@dataclass
class SourceInfo:
    """Where the model came from and what turned it into the served file."""

    format: str  # keras_h5, keras, savedmodel, graphdef, checkpoint, torchscript, torch_pickle, sklearn, onnx, pmml
    location: str = ""  # path, URL or model-repository reference it was fetched from
    converters: dict[str, str] = field(default_factory=dict)  # package -> version
    opset: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. the checkpoint step that was chosen


@dataclass
class Parity:
    """How closely the served file reproduces the source framework, measured at convert time."""

    verified: bool  # False when --no-verify was given
    samples: int = 0
    atol: float | None = None
    rtol: float | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    label_agreement: float | None = None  # classifiers: share of rows whose label matched
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # --quantize: the served file is the int8 model; the figures above are the float model's parity with the
    # source, this is the quantized model's deviation from the float model (convert/quantize.py)
    quantization: dict[str, Any] | None = None


@dataclass
class Manifest:
    name: str
    format: ModelFormat
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    version: str = "1"
    model_file: str = ""
    sha256: str = ""
    # Largest batch the model accepts along axis 0; 0 means the model has no batch axis (Triton's rule).
    max_batch_size: int = 0
    image: ImagePreprocessing | None = None
    labels: list[str] | None = None
    label_output: str | None = None  # the output whose last axis the labels index
    target: str | None = None  # PMML: the target field; also the predicted-label output's name
    source: SourceInfo | None = None
    parity: Parity | None = None
    # onnxruntime's offline-optimised copy of the ONNX file (convert/optimize.py): file, onnxruntime version,
    # level, cpu_features, sha256. The runtime loads it instead when its onnxruntime and CPU match.
    optimized: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.format not in MODEL_FILES:
            raise ValueError(f"unknown model format {self.format!r}")
        if not self.model_file:
            self.model_file = MODEL_FILES[self.format]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        version = data.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(f"manifest schema {version} is newer than this runtime understands ({SCHEMA_VERSION})")
        data["inputs"] = [TensorSpec(**t) for t in data.get("inputs", [])]
        data["outputs"] = [TensorSpec(**t) for t in data.get("outputs", [])]
        for key, kind in (("image", ImagePreprocessing), ("source", SourceInfo), ("parity", Parity)):
            if data.get(key) is not None:
                data[key] = kind(**data[key])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, directory: Path) -> Path:
        """Write ``directory/modelport.json`` atomically (temp file in the same dir, then rename)."""
        return write_text_atomic(Path(directory) / MANIFEST_FILE, json.dumps(self.to_dict(), indent=2) + "\n")


def read_manifest(version_dir: Path) -> Manifest | None:
    """The manifest for one version directory: its own, else the model-level one, else None."""
    version_dir = Path(version_dir)
    for candidate in (version_dir / MANIFEST_FILE, version_dir.parent / MANIFEST_FILE):
        if candidate.is_file():
            try:
                return Manifest.from_dict(json.loads(candidate.read_text()))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{candidate}: invalid manifest: {exc}") from exc
    return None


OPTIMIZED_FILE = "model.optimized.onnx"
# CPU instruction set extensions that decide which kernels onnxruntime's optimised graph holds
_CPU_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")


def cpu_features() -> list[str]:
    """The instruction set extensions (of ``_CPU_FLAGS``) this CPU has, plus the architecture."""
    import platform

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return [platform.machine(), *sorted(f for f in _CPU_FLAGS if f in flags)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``path`` whole or not at all. World-readable like the model file beside it (mkstemp's 0600
    would leave the manifest unreadable to a server running as another user, e.g. on a shared volume)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
