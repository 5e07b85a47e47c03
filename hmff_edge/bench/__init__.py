"""Benchmark exported models: latency, throughput and the batch sweep to out-of-memory.

TF-free. Every trial runs in a child process through :mod:`hmff_edge.bench.runner`, a
self-contained file that is also copied to remote devices. Entry points:
:func:`bench` (measure), :func:`hmff_edge.bench.report.write_outputs` (JSON/CSV/Markdown/PNG),
:func:`hmff_edge.bench.report.compare_table` (the paper's Table 5 shape).
"""

from hmff_edge.bench.api import BenchOptions, NoGpuError, bench, check_gpu
from hmff_edge.bench.runner import SCHEMA, latency_stats, parse_size, sweep

__all__ = ["SCHEMA", "BenchOptions", "NoGpuError", "bench", "check_gpu", "latency_stats",
           "parse_size", "sweep"]
