"""Per-op time profile of a ``.tflite`` model by splitting it into single-op models.

The LiteRT Python package has no op profiler (the C++ ``benchmark_model`` tool is not in the
wheel), so each operator of the main subgraph is cut out into a model of its own (same
tensors, same weights, its non-constant inputs made graph inputs), run alone with the same
interpreter settings (XNNPACK, ``threads``), and timed. Times are summed per op type and set
beside the whole model's time; the sum runs above the whole (per-invoke overhead on every
piece, no cross-op fusion), so read the shares, not the absolute sums.

TF-free: ``python -m hmff_edge.bench.opprofile MODEL.tflite [--threads 1] [--runs 20]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

# Memory-bound ops that do no MACs: their share is what a fused or LUT form could save.
ELEMENTWISE = ("LOGISTIC", "MUL", "ADD", "TRANSPOSE", "HARD_SWISH", "QUANTIZE", "DEQUANTIZE",
               "RESHAPE", "CONCATENATION", "SUB", "MINIMUM", "MAXIMUM", "RELU6", "RELU")


def _time(interp, runs: int) -> float:
    """Fastest ``invoke`` of ``runs`` on random inputs (after two warm-ups): on a shared
    machine other jobs only ever add time, so the minimum is the steadiest estimate of an
    op's own cost."""
    from hmff_edge.bench.runner import fill_random_input, invoke_seconds

    fill_random_input(interp)
    return min(invoke_seconds(interp, runs, warmup=2))


def profile_ops(path: str, threads: int = 1, runs: int = 20) -> dict:
    """Whole-model time and per-op / per-op-type times (ms) of a ``.tflite`` file."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fu

    whole = Interpreter(model_path=path, num_threads=threads)
    whole.allocate_tensors()
    whole_s = _time(whole, runs)
    model = fu.read_model(path)
    sg = model.subgraphs[0]
    ops = list(sg.operators)
    inputs, outputs = sg.inputs, sg.outputs
    signatures = model.signatureDefs
    model.signatureDefs = []
    # A tensor is constant when its buffer holds data.
    const = {i for i, t in enumerate(sg.tensors)
             if t.buffer and model.buffers[t.buffer].data is not None
             and len(model.buffers[t.buffer].data)}
    per_op = []
    try:
        for k, op in enumerate(ops):
            name = fu.opcode_to_name(model, op.opcodeIndex)
            sg.operators = [op]
            sg.inputs = [i for i in op.inputs if i >= 0 and i not in const]
            sg.outputs = list(op.outputs)
            try:
                buf = bytes(fu.convert_object_to_bytearray(model))
                it = Interpreter(model_content=buf, num_threads=threads)
                it.allocate_tensors()
                sec = _time(it, runs)
                err = None
            except Exception as exc:  # noqa: BLE001 - an op that cannot stand alone
                sec, err = None, f"{type(exc).__name__}: {exc}"[:200]
            out_t = sg.tensors[op.outputs[0]]
            per_op.append({"index": k, "op": name, "ms": None if sec is None else sec * 1e3,
                           "output_shape": [int(d) for d in out_t.shape],
                           "input_shapes": [[int(d) for d in sg.tensors[i].shape]
                                            for i in op.inputs if i >= 0],
                           "tensor": (out_t.name.decode() if isinstance(out_t.name, bytes)
                                      else str(out_t.name))[:120],
                           "error": err})
    finally:
        sg.operators, sg.inputs, sg.outputs = ops, inputs, outputs
        model.signatureDefs = signatures
    by_type: dict[str, float] = defaultdict(float)
    for p in per_op:
        by_type[p["op"]] += p["ms"] or 0.0
    total = sum(by_type.values())
    types = sorted(({"op": k, "count": c, "ms": by_type[k],
                     "share": by_type[k] / total if total else None}
                    for k, c in Counter(p["op"] for p in per_op).items()),
                   key=lambda r: -r["ms"])
    elementwise = sum(by_type[k] for k in ELEMENTWISE if k in by_type)
    return {"model": path, "threads": threads, "runs": runs, "whole_model_ms": whole_s * 1e3,
            "sum_of_ops_ms": total, "op_count": len(per_op), "by_type": types,
            "elementwise_ms": elementwise,
            "elementwise_share": elementwise / total if total else None,
            "ops": per_op,
            "method": "each op cut out into a single-op .tflite and timed alone (fastest of "
                      f"{runs} invokes, XNNPACK, {threads} thread(s))"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    a = p.parse_args(argv)
    print(json.dumps(profile_ops(a.model, a.threads, a.runs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
