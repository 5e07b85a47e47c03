"""Prometheus text exposition (format 0.0.4), written by hand.

The handful of series the server needs (two counters, three histograms, one gauge) take less
code than wiring ``prometheus_client``'s registry, and keep the runtime extra small. All
updates happen on the event loop thread, so no locking is needed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.errors: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size: dict[str, Histogram] = {}
        self.inference: dict[str, Histogram] = {}
        self.queue_depth: Callable[[], dict[str, int]] = dict

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        self.requests[(endpoint, code)] += 1
        if code >= 400:
            self.errors[(endpoint, code)] += 1
        h = self.latency.get(endpoint)
        if h is None:
            h = self.latency[endpoint] = Histogram(LATENCY_BUCKETS)
        h.observe(seconds)

    def observe_batch(self, model: str, size: int, seconds: float) -> None:
        if model not in self.batch_size:
            self.batch_size[model] = Histogram(BATCH_BUCKETS)
            self.inference[model] = Histogram(LATENCY_BUCKETS)
        self.batch_size[model].observe(size)
        self.inference[model].observe(seconds)

    def render(self) -> str:
        out: list[str] = []
        _counter(out, "hmff_requests_total", "HTTP requests by endpoint and status code.", self.requests)
        _counter(out, "hmff_request_errors_total", "HTTP requests answered with a 4xx/5xx code.", self.errors)
        _histograms(out, "hmff_request_duration_seconds", "Request latency from first byte to response.",
                    "endpoint", self.latency)
        _histograms(out, "hmff_batch_size", "Samples per executed inference batch.", "model", self.batch_size)
        _histograms(out, "hmff_inference_duration_seconds", "Engine time per executed batch.",
                    "model", self.inference)
        out.append("# HELP hmff_queue_depth Requests waiting for the batching worker.")
        out.append("# TYPE hmff_queue_depth gauge")
        for model, depth in sorted(self.queue_depth().items()):
            out.append(f'hmff_queue_depth{{model="{_esc(model)}"}} {depth}')
        return "\n".join(out) + "\n"


def _counter(out: list[str], name: str, help_: str, values: dict[tuple[str, int], int]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} counter")
    for (endpoint, code), v in sorted(values.items()):
        out.append(f'{name}{{endpoint="{_esc(endpoint)}",code="{code}"}} {v}')


def _histograms(out: list[str], name: str, help_: str, label: str, hs: dict[str, Histogram]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} histogram")
    for key, h in sorted(hs.items()):
        lv = f'{label}="{_esc(key)}"'
        cum = 0
        for le, c in zip(h.buckets, h.counts):
            cum += c
            out.append(f'{name}_bucket{{{lv},le="{_fmt(le)}"}} {cum}')
        out.append(f'{name}_bucket{{{lv},le="+Inf"}} {h.count}')
        out.append(f"{name}_sum{{{lv}}} {h.sum!r}")
        out.append(f"{name}_count{{{lv}}} {h.count}")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
