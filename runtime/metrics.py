"""Prometheus metrics named exactly as Triton's ``nv_inference_*`` family, so existing dashboards work.

The hot path only adds to plain Python numbers: every counter and histogram is updated on the event loop
(one thread), so it needs no lock. prometheus_client's own ``Histogram.observe`` takes a lock per bucket
and per sum, which py-spy showed as a few microseconds of every request on a tiny model; here an observation
is one ``bisect`` and two additions. A small collector exports the numbers under Triton's names at scrape
time: ``nv_inference_request_success`` and friends carry no ``_total`` suffix, durations are microseconds
with buckets from 100 us to 60 s, as in Triton. One private registry per app (tests start several).

With ``--workers N`` (runtime/workers.py) every worker is its own process. Then ``Metrics(multiprocess=True)``
copies its numbers into prometheus_client's multiprocess-mode value files (``PROMETHEUS_MULTIPROC_DIR``) at
most every ``FLUSH_INTERVAL_S`` and before each scrape, and ``render`` aggregates every worker's files with
prometheus_client's ``MultiProcessCollector``: counters and histograms are summed over all workers that ever
ran (a restarted worker's counts are kept), the pending gauge over the live ones.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

LABELS = ("model", "version")
BUCKETS_US = (100, 250, 500, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 1e7, 6e7)
CONTENT_TYPE = CONTENT_TYPE_LATEST
FLUSH_INTERVAL_S = 0.5  # multiprocess mode: how stale another worker's numbers can be in a scrape
MULTIPROCESS_ENV = "MODELPORT_METRICS_MULTIPROCESS"  # set by runtime/workers.py in every worker

COUNTERS = {
    "success": ("nv_inference_request_success", "counter", "Number of successful inference requests"),
    "failure": ("nv_inference_request_failure", "counter", "Number of failed inference requests"),
    "inference_count": ("nv_inference_count", "counter", "Number of inferences performed (a batch of N counts N)"),
    "exec_count": ("nv_inference_exec_count", "counter", "Number of model executions (a merged batch counts once)"),
    "pending": ("nv_inference_pending_request_count", "gauge", "Requests queued or executing"),
}
HISTOGRAMS = {
    "request_us": ("nv_inference_request_duration_us", "End-to-end inference request handling time in microseconds"),
    "queue_us": ("nv_inference_queue_duration_us", "Time requests waited in the model's queue in microseconds"),
    "compute_us": ("nv_inference_compute_infer_duration_us", "Model execution time in microseconds"),
}


@dataclass
class Count:
    value: float = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


@dataclass
class Histo:
    """Per-bucket (not cumulative) counts; the last slot counts observations above the largest bound."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_US) + 1))
    sum: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS_US, value)] += 1  # le semantics: a value equal to a bound is in it
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*BUCKETS_US, float("inf")), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), total))
        return out


@dataclass
class ModelMetrics:
    """Everything recorded for one model version."""

    request_us: Histo = field(default_factory=Histo)
    queue_us: Histo = field(default_factory=Histo)
    compute_us: Histo = field(default_factory=Histo)
    success: Count = field(default_factory=Count)
    failure: Count = field(default_factory=Count)
    inference_count: Count = field(default_factory=Count)
    exec_count: Count = field(default_factory=Count)
    pending: Count = field(default_factory=Count)

    def succeeded(self, started: float) -> None:
        """One request answered (``started``: its ``time.perf_counter()`` at arrival), whichever path ran it."""
        self.success.value += 1
        self.request_us.observe((time.perf_counter() - started) * 1e6)

    def executed(self, compute_us: float, rows: int) -> None:
        """One model execution of ``rows`` rows (a merged batch counts once): one call on every request's path."""
        self.compute_us.observe(compute_us)
        self.exec_count.value += 1
        self.inference_count.value += rows


class _Collector:
    def __init__(self, models: dict[tuple[str, str], ModelMetrics]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        for attribute, (name, kind, documentation) in COUNTERS.items():
            metric = Metric(name, documentation, kind)
            for (model, version), bound in self._models.items():
                metric.add_sample(name, {"model": model, "version": version}, getattr(bound, attribute).value)
            yield metric
        for attribute, (name, documentation) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, documentation, labels=LABELS)
            for key, bound in self._models.items():
                histo: Histo = getattr(bound, attribute)
                family.add_metric(list(key), histo.cumulative(), histo.sum)
            yield family


class _Shared:
    """This worker's numbers mirrored into prometheus_client's multiprocess value files."""

    def __init__(self) -> None:
        from prometheus_client.values import MultiProcessValue

        self._value = MultiProcessValue()
        self._values: dict[tuple, object] = {}

    def _get(self, kind: str, metric: str, sample: str, labels: tuple[str, ...], values: tuple[str, ...]) -> Any:
        key = (sample, values)
        value = self._values.get(key)
        if value is None:
            mode = "livesum" if kind == "gauge" else ""
            value = self._value(kind, metric, sample, labels, values, "", multiprocess_mode=mode)
            self._values[key] = value
        return value

    def write(self, models: dict[tuple[str, str], ModelMetrics]) -> None:
        for key, bound in models.items():
            for attribute, (name, kind, _doc) in COUNTERS.items():
                self._get(kind, name, name, LABELS, key).set(getattr(bound, attribute).value)
            for attribute, (name, _doc) in HISTOGRAMS.items():
                histo: Histo = getattr(bound, attribute)
                for bound_text, count in zip((*map(floatToGoString, BUCKETS_US), "+Inf"), histo.counts, strict=True):
                    self._get("histogram", name, name + "_bucket", (*LABELS, "le"), (*key, bound_text)).set(count)
                self._get("histogram", name, name + "_sum", LABELS, key).set(histo.sum)


class _Aggregated:
    """Every worker's files, aggregated; counters keep Triton's type (the files only know the value)."""

    def __init__(self, directory: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._collector = MultiProcessCollector(None, path=directory)

    def collect(self) -> Iterator[Metric]:
        yield from self._collector.collect()


class Metrics:
    def __init__(self, multiprocess: bool | None = None) -> None:
        if multiprocess is None:
            multiprocess = os.environ.get(MULTIPROCESS_ENV) == "1"
        self.registry = CollectorRegistry(auto_describe=False)
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        self._shared: _Shared | None = None
        self._flushed = 0.0
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if multiprocess and directory:
            self._shared = _Shared()
            self.registry.register(_Aggregated(directory))  # type: ignore[arg-type]
        else:
            self.registry.register(_Collector(self._models))  # type: ignore[arg-type]

    def model(self, name: str, version: str) -> ModelMetrics:
        key = (name, version)
        bound = self._models.get(key)
        if bound is None:
            bound = ModelMetrics()
            self._models[key] = bound
            self.flush()
        return bound

    def answered(self) -> float:
        """Requests answered so far (successes and failures, every model): whether the server was busy."""
        return sum(m.success.value + m.failure.value for m in self._models.values())

    def flush(self, every: float = 0.0) -> None:
        """Multiprocess mode: write this worker's numbers to its files (no more than once per ``every`` s)."""
        if self._shared is None:
            return
        now = time.monotonic()
        if now - self._flushed >= every:
            self._flushed = now
            self._shared.write(self._models)

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)
