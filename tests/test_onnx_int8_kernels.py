"""hmff_edge.bench.onnx_int8 tells an ONNX int8 graph that ONNX Runtime runs on integer
kernels from one it dequantizes to float convolutions (TF-free: a two-conv graph built
with onnx.helper, quantized with onnxruntime.quantization)."""

from __future__ import annotations

import numpy as np
import pytest

from hmff_edge.bench.onnx_int8 import check

onnx = pytest.importorskip("onnx")
quant = pytest.importorskip("onnxruntime.quantization")


def _float_model(path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 8, 1, 1)).astype("float32"), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4, 1, 1)).astype("float32"), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["y"], group=4)]  # a grouped 1x1
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 8, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 16, 8, 8])], initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class _Reader(quant.CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(1)
        self.it = iter([{"x": rng.standard_normal((1, 8, 8, 8)).astype("float32")}
                        for _ in range(4)])

    def get_next(self):
        return next(self.it, None)


def _quantized(tmp_path, activation):
    src, out = tmp_path / "f.onnx", tmp_path / f"q_{activation}.onnx"
    _float_model(src)
    quant.quantize_static(str(src), str(out), _Reader(), quant_format=quant.QuantFormat.QDQ,
                          per_channel=True, activation_type=getattr(quant.QuantType, activation),
                          weight_type=quant.QuantType.QInt8)
    return out


def test_float_model_has_no_integer_kernels(tmp_path):
    _float_model(tmp_path / "f.onnx")
    c = check(tmp_path / "f.onnx")
    assert not c.integer and c.float_mac_nodes == 2 and c.integer_mac_nodes == 0


def test_u8s8_qdq_runs_qlinearconv(tmp_path):
    c = check(_quantized(tmp_path, "QUInt8"))
    assert c.integer, c.ops
    # one QuantizeLinear in, one DequantizeLinear out (float I/O), nothing in between
    assert c.ops.get("QLinearConv") == 2 and c.ops.get("DequantizeLinear") == 1
