"""Prometheus metrics per model and version, named after Triton's ``nv_inference_*``.

Rendered with ``prometheus_client`` from a registry of the app's own (two apps in one process
never share series). Counters are updated from the event loop and from each version's engine
thread (``prometheus_client`` is thread-safe); the per-version gauges (pending requests,
state, load time) and the memory budget are read from the model manager at scrape time.
docs/serving.md lists every series beside its Triton equivalent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

# Series carry only their value; the *_created timestamps double every counter's lines.
prometheus_client.disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STATES = ("LOADING", "READY", "UNAVAILABLE", "UNLOADING")
MV = ("model", "version")


@dataclass
class VersionGauge:
    """What the manager reports about one version at scrape time."""

    model: str
    version: int
    state: str
    pending: int
    load_seconds: float


class _ManagerCollector:
    """Gauges read at scrape time from the manager and the memory budget."""

    def __init__(self, versions: Callable[[], Iterable[VersionGauge]],
                 budget: Callable[[], tuple[int, int]]) -> None:
        self.versions = versions
        self.budget = budget

    def collect(self):
        pending = GaugeMetricFamily("hmff_inference_pending_request_count",
                                    "Requests queued or running in the engine.", labels=MV)
        load = GaugeMetricFamily("hmff_model_load_duration_seconds",
                                 "Time to load, verify and warm up the version.", labels=MV)
        state = GaugeMetricFamily("hmff_model_state", "1 for the version's current state.",
                                  labels=[*MV, "state"])
        for g in self.versions():
            lv = [g.model, str(g.version)]
            pending.add_metric(lv, g.pending)
            load.add_metric(lv, g.load_seconds)
            for s in STATES:
                state.add_metric([*lv, s], 1.0 if s == g.state else 0.0)
        total, used = self.budget()
        mem = GaugeMetricFamily("hmff_memory_budget_bytes", "The request memory budget "
                                "(--max-buffered-mb) and the bytes held now.", labels=["kind"])
        mem.add_metric(["total"], total)
        mem.add_metric(["used"], used)
        return [pending, load, state, mem]


class Metrics:
    """Every series the server exposes on ``/metrics``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter("hmff_http_requests", "HTTP requests by route and status.",
                                     ["route", "code"], registry=r)
        self.http_duration = Histogram("hmff_http_request_duration_seconds",
                                       "HTTP request time, head received to response sent.",
                                       ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.success = Counter("hmff_inference_request_success", "Inference requests answered.",
                               MV, registry=r)
        self.failure = Counter("hmff_inference_request_failure",
                               "Inference requests that failed, by reason.", [*MV, "reason"],
                               registry=r)
        self.count = Counter("hmff_inference_count", "Samples inferred (a batch of 4 counts 4).",
                             MV, registry=r)
        self.exec_count = Counter("hmff_inference_exec_count", "Engine executions (batches).",
                                  MV, registry=r)
        self.request_us = Counter("hmff_inference_request_duration_us",
                                  "Cumulative request time of successful inference requests.",
                                  MV, registry=r)
        self.queue_us = Counter("hmff_inference_queue_duration_us",
                                "Cumulative time requests waited for the engine.", MV, registry=r)
        self.compute_us = Counter("hmff_inference_compute_infer_duration_us",
                                  "Cumulative engine time over executions.", MV, registry=r)
        self.queue_hist = Histogram("hmff_inference_queue_duration_seconds",
                                    "Time each request waited for the engine.", MV,
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.compute_hist = Histogram("hmff_inference_compute_duration_seconds",
                                      "Engine time per execution.", MV, buckets=LATENCY_BUCKETS,
                                      registry=r)
        self.batch_hist = Histogram("hmff_inference_batch_size", "Samples per engine execution.",
                                    MV, buckets=BATCH_BUCKETS, registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes and friends (Linux)

    def watch(self, versions: Callable[[], Iterable[VersionGauge]],
              budget: Callable[[], tuple[int, int]]) -> None:
        """Register the scrape-time gauges (called once the manager exists)."""
        self.registry.register(_ManagerCollector(versions, budget))

    def on_batch(self, model: str, version: int) -> Callable[[int, float, list[float]], None]:
        """The batcher callback of one version: execution, sample and queue-time series."""
        lv = (model, str(version))
        count, execs = self.count.labels(*lv), self.exec_count.labels(*lv)
        compute_us, compute_h = self.compute_us.labels(*lv), self.compute_hist.labels(*lv)
        queue_us, queue_h = self.queue_us.labels(*lv), self.queue_hist.labels(*lv)
        batch_h = self.batch_hist.labels(*lv)

        def observe(samples: int, seconds: float, waits: list[float]) -> None:
            count.inc(samples)
            execs.inc()
            batch_h.observe(samples)
            compute_us.inc(seconds * 1e6)
            compute_h.observe(seconds)
            for w in waits:
                queue_us.inc(w * 1e6)
                queue_h.observe(w)

        return observe

    def request_done(self, model: str, version: int, seconds: float) -> None:
        self.success.labels(model, str(version)).inc()
        self.request_us.labels(model, str(version)).inc(seconds * 1e6)

    def request_failed(self, model: str, version: int, reason: str) -> None:
        self.failure.labels(model, str(version), reason).inc()

    def observe_http(self, route: str, code: int, seconds: float) -> None:
        self.http_requests.labels(route, str(code)).inc()
        self.http_duration.labels(route).observe(seconds)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


def failure_reason(status: int) -> str:
    """Triton's failure reasons for an HTTP status: REJECTED (queue or memory full),
    CANCELED (the client went away), BACKEND (the engine or a bug), else bad input."""
    if status == 503:
        return "REJECTED"
    if status == 499:
        return "CANCELED"
    if status == 408:
        return "TIMEOUT"
    if status >= 500:
        return "BACKEND"
    return "BAD_REQUEST"
