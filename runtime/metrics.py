"""Prometheus metrics named after Triton's ``nv_inference_*`` family, so existing dashboards chart them.

One private registry per app (tests start several). Children are bound once per model version, so
the hot path is an attribute lookup and an ``inc``/``observe``. Durations are in microseconds, as
in Triton; the histograms' buckets span 100 us to 60 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LABELS = ("model", "version")
BUCKETS_US = (100, 250, 500, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 1e7, 6e7)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class ModelMetrics:
    """The bound children for one model version."""

    success: Counter
    failure: Counter
    inference_count: Counter
    exec_count: Counter
    request_us: Histogram
    queue_us: Histogram
    compute_us: Histogram
    pending: Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._success = Counter("nv_inference_request_success", "Successful inference requests", LABELS, registry=r)
        self._failure = Counter("nv_inference_request_failure", "Failed inference requests", LABELS, registry=r)
        self._count = Counter("nv_inference_count", "Inferences performed (a batch of N counts N)", LABELS, registry=r)
        self._exec = Counter(
            "nv_inference_exec_count", "Model executions (a merged batch counts once)", LABELS, registry=r
        )
        self._request = Histogram(
            "nv_inference_request_duration_us",
            "End-to-end inference request handling time in microseconds",
            LABELS,
            buckets=BUCKETS_US,
            registry=r,
        )
        self._queue = Histogram(
            "nv_inference_queue_duration_us",
            "Time requests waited in the model's queue in microseconds",
            LABELS,
            buckets=BUCKETS_US,
            registry=r,
        )
        self._compute = Histogram(
            "nv_inference_compute_infer_duration_us",
            "Model execution time in microseconds",
            LABELS,
            buckets=BUCKETS_US,
            registry=r,
        )
        self._pending = Gauge("nv_inference_pending_request_count", "Requests queued or executing", LABELS, registry=r)
        self._bound: dict[tuple[str, str], ModelMetrics] = {}

    def model(self, name: str, version: str) -> ModelMetrics:
        key = (name, version)
        bound = self._bound.get(key)
        if bound is None:
            bound = ModelMetrics(
                self._success.labels(*key),
                self._failure.labels(*key),
                self._count.labels(*key),
                self._exec.labels(*key),
                self._request.labels(*key),
                self._queue.labels(*key),
                self._compute.labels(*key),
                self._pending.labels(*key),
            )
            self._bound[key] = bound
        return bound

    def render(self) -> bytes:
        return generate_latest(self.registry)
