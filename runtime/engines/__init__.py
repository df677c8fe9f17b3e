"""Model engines: one per served file format, behind one small interface.

Each engine module is imported only when a model of its format is loaded, so an ONNX server never
imports pypmml (nor starts a JVM) and a PMML server never imports onnxruntime.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from bundle.manifest import Manifest

# format -> module that defines ``load(version_dir, manifest, options) -> Engine``
ENGINE_MODULES = {"onnx": "runtime.engines.onnx", "pmml": "runtime.engines.pmml"}


@dataclass(frozen=True)
class EngineOptions:
    """Execution settings shared by engines (each uses what applies to it)."""

    intra_op_threads: int = 0  # 0: the engine's default
    inter_op_threads: int = 0
    graph_optimization: str = "all"  # onnxruntime: disable | basic | extended | all
    warmup: bool = True


class Engine(Protocol):
    """Loads once, predicts many times, closes once. ``predict`` is called from a worker thread.

    ``concurrency``: how many runs at once the engine serves best when ``--instances`` is not given."""

    manifest: Manifest
    concurrency: int

    def validate(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check decoded request tensors against the model (names, datatypes, shapes, PMML fields)
        and return them ready for ``predict``; raise ``runtime.errors.BadRequest`` naming the
        offending input. Runs on the event loop before queueing, so it must be cheap."""
        ...

    def predict(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model. ``inputs`` are already validated against ``manifest.inputs``."""
        ...

    def close(self) -> None: ...


def load_engine(fmt: str, version_dir: Path, manifest: Manifest | None, options: EngineOptions) -> Engine:
    """Import the engine for ``fmt`` on first use and load the model in ``version_dir``."""
    try:
        module = importlib.import_module(ENGINE_MODULES[fmt])
    except KeyError:
        raise ValueError(f"no engine for model format {fmt!r}") from None
    return module.load(Path(version_dir), manifest, options)
