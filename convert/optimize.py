"""Write onnxruntime's offline-optimised model beside the served one, so the server skips graph optimisation.

onnxruntime spends most of a session's creation optimising the graph (constant folding, fusions, the NCHWc
layout for convolutions); ``SessionOptions.optimized_model_filepath`` saves the result. The runtime loads that
file with graph optimisation off when it runs the same onnxruntime version on a CPU with the same instruction
set extensions, and the original file with full optimisation otherwise (runtime/engines/onnx.py): the
optimised graph at level "all" holds kernels chosen for this CPU (e.g. AVX-512 NCHWc blocks), and onnxruntime
only supports reading it back with the version that wrote it. Level "extended" would be portable across
CPUs but loses the layout optimisation, which made MobileNetV2 much slower per run (bench/notes.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundle.manifest import OPTIMIZED_FILE, cpu_features, sha256_file


def write_optimized(model_path: Path, workdir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The optimised copy of ``model_path`` in ``workdir`` and its manifest record; None if onnxruntime cannot
    save it (e.g. a graph with custom operators): the bundle then has the plain model only."""
    import onnxruntime as ort

    target = workdir / OPTIMIZED_FILE
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception:
        return None
    if not target.is_file():
        return None
    return target, {
        "file": OPTIMIZED_FILE,
        "onnxruntime": ort.__version__,
        "level": "all",
        "cpu_features": cpu_features(),
        "sha256": sha256_file(target),
    }
