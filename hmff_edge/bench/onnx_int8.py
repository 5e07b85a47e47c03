"""Does an int8 (QDQ) ONNX file run integer kernels in ONNX Runtime?

A QDQ graph (QuantizeLinear / DequantizeLinear around float ops) is only fast when ONNX
Runtime's graph optimizer fuses each DQ -> Conv -> Q into ``QLinearConv`` (or
``ConvInteger``, ``QLinearMatMul``, ``MatMulInteger``...). Where it does not, the session
dequantizes, computes in float and quantizes again: int8 in the file, float on the CPU. This
saves the optimized graph ONNX Runtime actually runs and counts its node types.

TF-free: ``python -m hmff_edge.bench.onnx_int8 MODEL.onnx``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

INTEGER_OPS = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger",
               "DynamicQuantizeMatMul", "QGemm", "MatMulIntegerToFloat")
FLOAT_MAC_OPS = ("Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm")


@dataclass
class IntegerCheck:
    """Node types of the graph ONNX Runtime runs, and whether the MACs are integer."""

    path: str
    integer_mac_nodes: int
    float_mac_nodes: int
    ops: dict[str, int] = field(default_factory=dict)

    @property
    def integer(self) -> bool:
        """Every MAC node is an integer kernel."""
        return self.integer_mac_nodes > 0 and self.float_mac_nodes == 0

    def to_dict(self) -> dict:
        return {**asdict(self), "integer": self.integer}


def optimized_ops(path: str | Path, threads: int = 1) -> Counter:
    """Node type -> count of the graph an ``ORT_ENABLE_ALL`` CPU session runs."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hmff-ort-") as tmp:
        opt = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.optimized_model_filepath = str(opt)
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(opt), load_external_data=False).graph
        return Counter(n.op_type for n in graph.node)


def check(path: str | Path) -> IntegerCheck:
    ops = optimized_ops(path)
    return IntegerCheck(str(path), sum(ops[o] for o in INTEGER_OPS),
                        sum(ops[o] for o in FLOAT_MAC_OPS), dict(sorted(ops.items())))


def main(argv=None) -> int:
    for p in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps(check(p).to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
