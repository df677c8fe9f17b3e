"""Prometheus metrics named exactly as Triton's ``nv_inference_*`` family, so existing dashboards work.

Counters are plain per-model numbers (incremented only on the event loop, so no lock) exported by a
small collector under Triton's names: ``nv_inference_request_success`` and friends carry no
``_total`` suffix, which prometheus_client's own ``Counter`` would add. The duration histograms are
prometheus_client ``Histogram`` children bound once per model version; durations are microseconds,
as in Triton, with buckets from 100 us to 60 s. One private registry per app (tests start several).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

LABELS = ("model", "version")
BUCKETS_US = (100, 250, 500, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 1e7, 6e7)
CONTENT_TYPE = CONTENT_TYPE_LATEST

COUNTERS = {
    "success": ("nv_inference_request_success", "counter", "Number of successful inference requests"),
    "failure": ("nv_inference_request_failure", "counter", "Number of failed inference requests"),
    "inference_count": ("nv_inference_count", "counter", "Number of inferences performed (a batch of N counts N)"),
    "exec_count": ("nv_inference_exec_count", "counter", "Number of model executions (a merged batch counts once)"),
    "pending": ("nv_inference_pending_request_count", "gauge", "Requests queued or executing"),
}


@dataclass
class Count:
    value: float = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


@dataclass
class ModelMetrics:
    """Everything recorded for one model version."""

    request_us: Histogram
    queue_us: Histogram
    compute_us: Histogram
    success: Count = field(default_factory=Count)
    failure: Count = field(default_factory=Count)
    inference_count: Count = field(default_factory=Count)
    exec_count: Count = field(default_factory=Count)
    pending: Count = field(default_factory=Count)


class _CounterCollector:
    def __init__(self, models: dict[tuple[str, str], ModelMetrics]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        for attribute, (name, kind, documentation) in COUNTERS.items():
            metric = Metric(name, documentation, kind)
            for (model, version), bound in self._models.items():
                value = getattr(bound, attribute).value
                metric.add_sample(name, {"model": model, "version": version}, value)
            yield metric


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        self.registry.register(_CounterCollector(self._models))  # type: ignore[arg-type]
        self._request = self._histogram(
            "nv_inference_request_duration_us", "End-to-end inference request handling time in microseconds"
        )
        self._queue = self._histogram(
            "nv_inference_queue_duration_us", "Time requests waited in the model's queue in microseconds"
        )
        self._compute = self._histogram(
            "nv_inference_compute_infer_duration_us", "Model execution time in microseconds"
        )

    def _histogram(self, name: str, documentation: str) -> Histogram:
        return Histogram(name, documentation, LABELS, buckets=BUCKETS_US, registry=self.registry)

    def model(self, name: str, version: str) -> ModelMetrics:
        key = (name, version)
        bound = self._models.get(key)
        if bound is None:
            bound = ModelMetrics(self._request.labels(*key), self._queue.labels(*key), self._compute.labels(*key))
            self._models[key] = bound
        return bound

    def render(self) -> bytes:
        return generate_latest(self.registry)
