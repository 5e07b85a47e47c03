"""A roofline per model: the least time a ``.tflite`` graph can take on this machine.

For every operator of the main subgraph: its MACs (convolutions, depthwise, fully
connected) and the bytes it moves (every input and output tensor once, weights included,
at the tensor's own dtype width). The machine side is measured, not taken from a data sheet:
the GEMM peak of LiteRT itself (a shipped 1x1-convolution probe, 56x56x256 -> 256, fp32 and
int8, 1 thread) and the memory bandwidth of a copy (numpy, cache-resident working set and a
DRAM-sized one). An op cannot finish faster than ``max(MACs / peak, bytes / bandwidth)``;
the sum over ops is the model's lower bound, and ``lower bound / measured latency`` the share
of it that a run achieved. The bound uses the faster (cache) bandwidth, since HMFF's
activations fit in L2/L3, so it is a true lower bound; the DRAM figure is reported beside it.

TF-free: ``python -m hmff_edge.bench.roofline MODEL.tflite [--latency-ms X] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hmff_edge.tables import markdown_table

PROBES = Path(__file__).with_name("roofline_probes")
# TFLite TensorType -> bytes per element
_DTYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 11: 16, 15: 1, 16: 4}
_MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


@dataclass
class OpCost:
    index: int
    op: str
    macs: int
    bytes: int


@dataclass
class GraphCost:
    """MACs and bytes moved per inference (batch 1) of one graph."""

    path: str
    dtype: str  # "int8" when the MAC ops run on 8-bit tensors, else "fp32"
    macs: int
    bytes: int
    weight_bytes: int
    ops: list[OpCost] = field(default_factory=list)


@dataclass
class Machine:
    """Measured peaks of this machine (1 thread)."""

    gemm_gmacs_fp32: float
    gemm_gmacs_int8: float
    bandwidth_gbs_cache: float
    bandwidth_gbs_dram: float
    method: str = ""

    def peak(self, dtype: str) -> float:
        return self.gemm_gmacs_int8 if dtype == "int8" else self.gemm_gmacs_fp32


@dataclass
class Roofline:
    model: str
    dtype: str
    macs: int
    bytes: int
    weight_bytes: int
    compute_bound_ms: float  # all MACs at the GEMM peak
    memory_bound_ms: float  # all bytes at the cache bandwidth
    lower_bound_ms: float  # sum over ops of max(compute, memory)
    memory_bound_ops_share: float  # share of the lower bound spent in memory-bound ops
    measured_ms: float | None = None
    achieved_share: float | None = None  # lower_bound / measured

    def to_dict(self) -> dict:
        return asdict(self)


def _nbytes(tensor) -> int:
    n = 1
    for d in tensor.shape if tensor.shape is not None else []:
        n *= max(int(d), 1)
    return n * _DTYPE_BYTES.get(int(tensor.type), 4)


def graph_cost(path: str | Path) -> GraphCost:
    """Per-op MACs and bytes of the main subgraph of a ``.tflite`` file (batch 1)."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model(str(path))
    sg = model.subgraphs[0]
    const = {i for i, t in enumerate(sg.tensors)
             if t.buffer and model.buffers[t.buffer].data is not None
             and len(model.buffers[t.buffer].data)}
    ops, weights, int8_macs, all_macs = [], 0, 0, 0
    for k, op in enumerate(sg.operators):
        name = fu.opcode_to_name(model, op.opcodeIndex)
        ins = [i for i in op.inputs if i >= 0]
        outs = [i for i in op.outputs if i >= 0]
        moved = sum(_nbytes(sg.tensors[i]) for i in ins + outs)
        weights += sum(_nbytes(sg.tensors[i]) for i in ins if i in const)
        macs = _macs(name, sg, ins, outs)
        all_macs += macs
        if macs and int(sg.tensors[ins[0]].type) in (3, 9):
            int8_macs += macs
        ops.append(OpCost(k, name, macs, moved))
    dtype = "int8" if all_macs and int8_macs * 2 > all_macs else "fp32"
    return GraphCost(str(path), dtype, sum(o.macs for o in ops), sum(o.bytes for o in ops),
                     weights, ops)


def _macs(name: str, sg, ins: list[int], outs: list[int]) -> int:
    if name not in _MAC_OPS or len(ins) < 2:
        return 0
    out = [max(int(d), 1) for d in sg.tensors[outs[0]].shape]
    w = [int(d) for d in sg.tensors[ins[1]].shape]
    n_out = 1
    for d in out:
        n_out *= d
    if name == "CONV_2D" or name == "TRANSPOSE_CONV":  # filter [O, kh, kw, I/groups]
        return n_out * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, O]
        return n_out * w[1] * w[2]
    return n_out * w[-1]  # FULLY_CONNECTED: weights [O, I]


def _median_invoke_s(path: Path, threads: int, rounds: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    from hmff_edge.bench.runner import fill_random_input, invoke_seconds

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    fill_random_input(it)
    # the fastest quartile: other jobs on a shared machine only ever add time
    samples = sorted(invoke_seconds(it, rounds, warmup=3))
    return statistics.median(samples[:max(1, len(samples) // 4)])


def copy_bandwidth_gbs(nbytes: int, rounds: int = 20) -> float:
    """Bytes read + written per second by a numpy copy of ``nbytes`` (best rounds)."""
    import numpy as np

    src = np.ones(nbytes // 8, np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def measure_machine(threads: int = 1, rounds: int = 40) -> Machine:
    """GEMM peaks of LiteRT (the shipped probes) and copy bandwidths of this machine."""
    peaks = {}
    for q in ("fp32", "int8"):
        probe = PROBES / f"gemm_{q}.tflite"
        macs = graph_cost(probe).macs
        peaks[q] = macs / _median_invoke_s(probe, threads, rounds) / 1e9
    return Machine(
        gemm_gmacs_fp32=peaks["fp32"], gemm_gmacs_int8=peaks["int8"],
        bandwidth_gbs_cache=copy_bandwidth_gbs(2 << 20), bandwidth_gbs_dram=copy_bandwidth_gbs(512 << 20, 5),
        method=f"LiteRT XNNPACK {threads} thread(s): 1x1 conv 56x56x256->256 (205.5M MACs), "
               "median of the fastest quarter of invokes; bandwidth: numpy copy, 2 MiB "
               "(cache) and 512 MiB (DRAM), best of rounds, bytes read + written")


def roofline(cost: GraphCost, machine: Machine, measured_ms: float | None = None,
             name: str | None = None) -> Roofline:
    """The lower-bound time of ``cost`` on ``machine`` and the share a run achieved."""
    peak = machine.peak(cost.dtype) * 1e9  # MAC/s
    bw = max(machine.bandwidth_gbs_cache, machine.bandwidth_gbs_dram) * 1e9  # B/s
    per_op = [(o.macs / peak, o.bytes / bw) for o in cost.ops]
    bound = sum(max(c, m) for c, m in per_op)
    mem = sum(m for c, m in per_op if m > c)
    lb_ms = bound * 1e3
    return Roofline(
        model=name or Path(cost.path).name, dtype=cost.dtype, macs=cost.macs, bytes=cost.bytes,
        weight_bytes=cost.weight_bytes, compute_bound_ms=cost.macs / peak * 1e3,
        memory_bound_ms=cost.bytes / bw * 1e3, lower_bound_ms=lb_ms,
        memory_bound_ops_share=mem / bound if bound else 0.0, measured_ms=measured_ms,
        achieved_share=lb_ms / measured_ms if measured_ms else None)


def attach(results: list[dict], machine: Machine | None = None) -> Machine | None:
    """Add ``result['roofline']`` to every LiteRT result whose file is here (bench results
    dicts: ``model_file.path``, ``latency.p50`` in ms). Returns the machine used."""
    todo = [r for r in results if str((r.get("model_file") or {}).get("path", "")).endswith(".tflite")
            and Path(r["model_file"]["path"]).is_file()]
    if not todo:
        return machine
    machine = machine or measure_machine()
    for r in todo:
        p50 = (r.get("latency") or {}).get("p50")
        name = (r.get("model") or {}).get("name") or Path(r["model_file"]["path"]).name
        r["roofline"] = roofline(graph_cost(r["model_file"]["path"]), machine, p50,
                                 name=name).to_dict()
        r["roofline"]["machine"] = asdict(machine)
    return machine


TABLE_COLUMNS = [
    ("model", "model"), ("type", "type"), ("macs", "MACs"), ("bytes", "bytes moved"),
    ("weights", "weights"), ("compute", "compute-bound ms"), ("memory", "memory-bound ms"),
    ("bound", "lower bound ms"), ("share", "memory-bound share"), ("measured", "measured ms"),
    ("achieved", "achieved")]


def table(rows: list[Roofline], machine: Machine) -> str:
    """A terminal / markdown table of rooflines."""
    head = (f"Machine (measured): GEMM peak fp32 {machine.gemm_gmacs_fp32:.1f} GMAC/s, int8 "
            f"{machine.gemm_gmacs_int8:.1f} GMAC/s; copy bandwidth {machine.bandwidth_gbs_cache:.1f}"
            f" GB/s (cache), {machine.bandwidth_gbs_dram:.1f} GB/s (DRAM). {machine.method}.")
    cells = [{"model": r.model, "type": r.dtype, "macs": f"{r.macs / 1e6:.1f}M",
              "bytes": f"{r.bytes / 1e6:.2f} MB", "weights": f"{r.weight_bytes / 1e6:.2f} MB",
              "compute": f"{r.compute_bound_ms:.3f}", "memory": f"{r.memory_bound_ms:.3f}",
              "bound": f"{r.lower_bound_ms:.3f}", "share": f"{100 * r.memory_bound_ops_share:.0f}%",
              "measured": "-" if r.measured_ms is None else f"{r.measured_ms:.2f}",
              "achieved": "-" if r.achieved_share is None else f"{100 * r.achieved_share:.1f}%"}
             for r in rows]
    return head + "\n\n" + markdown_table(cells, TABLE_COLUMNS)


def results_table(results: list[dict]) -> str:
    """:func:`table` over bench results that :func:`attach` gave a roofline."""
    have = [r["roofline"] for r in results if r.get("roofline")]
    if not have:
        return "roofline: no LiteRT (.tflite) result to bound"
    machine = Machine(**have[0]["machine"])
    return table([Roofline(**{k: v for k, v in h.items() if k != "machine"}) for h in have],
                 machine)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--latency-ms", type=float, nargs="*", default=None,
                   help="measured latency of each model (for the achieved share)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    lat = a.latency_ms or []
    machine = measure_machine()
    rows = [roofline(graph_cost(m), machine, lat[i] if i < len(lat) else None)
            for i, m in enumerate(a.models)]
    if a.json:
        print(json.dumps({"machine": asdict(machine), "models": [r.to_dict() for r in rows]},
                         indent=1))
    else:
        print(table(rows, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
