"""The ONNX engine: one onnxruntime ``InferenceSession`` on the CPU provider, with explicit options.

onnxruntime releases the GIL inside ``run``, so the server calls ``predict`` from worker threads.
When the version directory has no manifest, the manifest is derived from the graph: ONNX element
types become V2 datatypes, symbolic or unknown dimensions become -1, and a variable first axis on
every input means the model has a batch axis (``max_batch_size`` -1 in Triton terms, here
``DERIVED_MAX_BATCH`` so that batching and the batch-size limit have a number to work with).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from bundle import datatypes
from bundle.manifest import Manifest, TensorSpec, cpu_features, sha256_file
from runtime.engines import EngineOptions
from runtime.errors import BadRequest, InferenceError, ModelLoadError
from runtime.validation import InputCheck

log = logging.getLogger("runtime.engines.onnx")

PROBE_ROWS = 4  # warm-up: the batch size whose per-row cost decides whether batching pays
BATCH_PAYS_BELOW = 0.7  # ...it pays when a row in a batch costs less than this share of a single row
PROBE_MAX_SECONDS = 0.25  # ...probed only when one run is quicker than this: the probe costs four more runs
DERIVED_MAX_BATCH = 1 << 16  # a derived dynamic batch axis: large, but still a bound
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


# The intra-op pool's threads spin for at most this long before they sleep. A run hands work to the pool at every
# parallel section (dozens per CNN inference); a sleeping thread takes a futex wake-up each time, slow on a virtual
# machine, while an unbounded spin (onnxruntime's default) burns the cores the event loop, the image decoder and a
# concurrent run need between requests. Ten microseconds keeps the hand-offs within a run warm and ends at once
# after it (the A/B is in bench/notes.md, "Session 11"). bench/'s references use ``session_options`` too.
SESSION_CONFIG = {
    "session.intra_op.allow_spinning": "1",
    "session.intra_op.spin_duration_us": "10",
}


def session_options(options: EngineOptions) -> ort.SessionOptions:
    """The exact session options the server uses; tests build their reference sessions with this too."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = OPTIMIZATION_LEVELS[options.graph_optimization]
    so.log_severity_level = 3  # errors only: load warnings would otherwise print per model
    for key, value in SESSION_CONFIG.items():
        so.add_session_config_entry(key, value)
    return so


def _spec(arg: Any, path: Path) -> TensorSpec:
    datatype = datatypes.from_ort(arg.type)
    if datatype is None:
        raise ModelLoadError(f"{path}: tensor {arg.name!r} has type {arg.type}, which has no V2 datatype")
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


def describe(session: ort.InferenceSession, path: Path, name: str, version: str) -> Manifest:
    """A manifest from the graph alone (no modelport.json in the version directory)."""
    inputs = [_spec(a, path) for a in session.get_inputs()]
    outputs = [_spec(a, path) for a in session.get_outputs()]
    batched = bool(inputs) and all(s.shape and s.shape[0] == -1 for s in inputs)
    return Manifest(
        name=name,
        format="onnx",
        version=version,
        inputs=inputs,
        outputs=outputs,
        model_file=path.name,
        max_batch_size=DERIVED_MAX_BATCH if batched else 0,
    )


def _check_manifest(manifest: Manifest, graph: Manifest, path: Path) -> None:
    """The manifest must describe this graph: same input names and datatypes, outputs that exist."""
    for spec in manifest.inputs:
        actual = graph.input(spec.name)
        if actual is None:
            names = ", ".join(s.name for s in graph.inputs)
            raise ModelLoadError(f"{path}: manifest input {spec.name!r} is not in the graph (graph inputs: {names})")
        if actual.datatype != spec.datatype:
            raise ModelLoadError(
                f"{path}: manifest says input {spec.name!r} is {spec.datatype}, the graph says {actual.datatype}"
            )
    for spec in manifest.outputs:
        if graph.output(spec.name) is None:
            raise ModelLoadError(f"{path}: manifest output {spec.name!r} is not in the graph")
    missing = [s.name for s in graph.inputs if manifest.input(s.name) is None]
    if missing:
        raise ModelLoadError(f"{path}: graph input {missing[0]!r} is missing from the manifest")


class OnnxEngine:
    def __init__(self, session: ort.InferenceSession, manifest: Manifest, intra_op_threads: int = 1) -> None:
        self.session = session
        self.manifest = manifest
        # Two runs at once when a run has two or more intra-op threads: one run's parallel sections leave its
        # threads waiting on each other, and a second run fills those gaps (measured: docs/runtime.md,
        # "Batching"). The session is shared, so its weights are not copied. One thread per run: nothing to fill.
        self.concurrency = 2 if intra_op_threads > 1 else 1
        self._all_outputs = [o.name for o in manifest.outputs]
        self._string_inputs = {s.name for s in manifest.inputs if s.datatype == "BYTES"}
        # The C session under onnxruntime's Python ``InferenceSession.run``: that wrapper re-checks the input
        # names (``self.validate`` has) and supports provider fallback (the CPU provider has none to fall back
        # to). Skipping it is measurable on a tiny model (docs/runtime.md, "Per-call cost").
        # Not there in some onnxruntime build: the public method.
        inner = getattr(session, "_sess", None)
        self._run = inner.run if inner is not None and hasattr(inner, "run") else session.run
        self.batching_pays: bool | None = None  # measured by warmup(); None: not measured
        self.run_seconds: float | None = None  # warm-up: the best time of a one-row run
        self.validate = InputCheck(manifest)  # validate(inputs) -> inputs checked against the manifest

    def predict(self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else self._all_outputs
        feed = {k: _as_text(v) for k, v in inputs.items()} if self._string_inputs else inputs
        try:
            results = self._run(names, feed, None)
        except InvalidArgument as exc:  # input-dependent (e.g. a shape the graph's Reshape cannot take)
            raise BadRequest(f"model {self.manifest.name!r} rejected the input: {exc}") from exc
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise InferenceError(f"model {self.manifest.name!r}: onnxruntime failed: {exc}") from exc
        return dict(zip(names, results, strict=True))

    def warmup(self) -> None:
        """One run on zeros (empty strings) of the spec shapes, batch 1, so the first request is not slow."""
        feed = {}
        for spec in self.manifest.inputs:
            shape = [1 if d < 0 else d for d in spec.shape]
            if spec.datatype == "BYTES":
                feed[spec.name] = np.full(shape, "", dtype=object)
            else:
                feed[spec.name] = np.zeros(shape, dtype=datatypes.Datatype(spec.datatype).numpy)
        started = time.perf_counter()
        self.predict(feed)
        first = time.perf_counter() - started
        if first > PROBE_MAX_SECONDS:
            # Four more runs of a slow model would hold up readiness (and a SIGTERM during the load) for
            # seconds; batching stays on, as it was before the probe existed.
            log.info("%s: one run took %.3g s: adaptive batching left on without probing", self.manifest.name, first)
            return
        self.batching_pays = self._batching_pays(feed)

    def _batching_pays(self, single: dict[str, np.ndarray]) -> bool | None:
        """Whether a batch of ``PROBE_ROWS`` costs clearly less per row than single rows (best of two runs each).

        Merging requests costs a concatenation, a split and a wait for the batch; it pays only where onnxruntime
        runs a batch cheaper per row (small models, where per-call overhead dominates). A large convnet on few
        cores runs a batch at about the per-row cost of single rows, and then merging only adds latency and
        the memory of the largest batch. None: the model has no batch axis to probe."""
        cap = self.manifest.max_batch_size
        if cap == 0 or any(not s.shape or s.shape[0] != -1 for s in self.manifest.inputs):
            return None
        rows = min(PROBE_ROWS, cap) if cap > 0 else PROBE_ROWS
        if rows < 2:
            return None
        batch = {k: np.concatenate([v] * rows) for k, v in single.items()}

        def best(feed: dict[str, np.ndarray]) -> float:
            times = []
            for _ in range(2):
                started = time.perf_counter()
                self.predict(feed)
                times.append(time.perf_counter() - started)
            return min(times)

        one, many = best(single), best(batch) / rows
        self.run_seconds = one
        pays = many < BATCH_PAYS_BELOW * one
        log.info(
            "%s: a batch of %d costs %.3g ms per row, one row %.3g ms: adaptive batching %s",
            self.manifest.name,
            rows,
            many * 1e3,
            one * 1e3,
            "on" if pays else "off",
        )
        return pays

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def _as_text(array: np.ndarray) -> np.ndarray:
    """onnxruntime stringifies ``bytes`` items (``"b'x'"``); give it ``str`` items."""
    if array.dtype == object and array.size and isinstance(array.flat[0], bytes):
        flat = [b.decode("utf-8", "replace") if isinstance(b, bytes) else b for b in array.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(array.shape)
    return array


def _optimized_session(
    version_dir: Path, manifest: Manifest | None, options: EngineOptions
) -> ort.InferenceSession | None:
    """The converter's offline-optimised graph (convert/optimize.py), loaded with graph optimisation off: most of
    a session's creation time is that optimisation. Only with the onnxruntime version and CPU features that
    wrote it, its sha256 intact and the default ``--graph-optimization all``; otherwise None (the plain file)."""
    record = manifest.optimized if manifest is not None else None
    if not record or options.graph_optimization != "all":
        return None
    path = version_dir / str(record.get("file", ""))
    if record.get("onnxruntime") != ort.__version__ or record.get("cpu_features") != cpu_features():
        log.info(
            "%s: written by onnxruntime %s on another CPU or version; optimising at load",
            path,
            record.get("onnxruntime"),
        )
        return None
    if path.parent != version_dir or not path.is_file() or sha256_file(path) != record.get("sha256"):
        log.warning("%s: missing or changed (sha256); loading the plain model", path)
        return None
    fast = dataclasses.replace(options, graph_optimization="disable")
    try:
        return ort.InferenceSession(str(path), session_options(fast), providers=["CPUExecutionProvider"])
    except Exception as exc:
        log.warning("%s: onnxruntime cannot load it (%s); loading the plain model", path, exc)
        return None


def load(version_dir: Path, manifest: Manifest | None, options: EngineOptions) -> OnnxEngine:
    path = version_dir / (manifest.model_file if manifest else "model.onnx")
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file is missing")
    if manifest is not None and manifest.sha256:
        actual = sha256_file(path)
        if actual != manifest.sha256:
            raise ModelLoadError(f"{path}: sha256 {actual} does not match the manifest's {manifest.sha256}")
    try:
        session = _optimized_session(version_dir, manifest, options)
        if session is None:
            session = ort.InferenceSession(str(path), session_options(options), providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: onnxruntime cannot load it: {reason}") from exc
    graph = describe(session, path, name=version_dir.parent.name, version=version_dir.name)
    if manifest is None:
        manifest = graph
    else:
        _check_manifest(manifest, graph, path)
    engine = OnnxEngine(session, manifest, options.intra_op_threads or os.cpu_count() or 1)
    if options.warmup:
        try:
            engine.warmup()
        except InferenceError as exc:  # e.g. a spatial axis that 1 is too small for: serve anyway
            log.warning("%s: warm-up with batch-1 zeros failed, serving without it: %s", path, exc)
    return engine
