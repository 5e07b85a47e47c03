"""ONNX export: fp32 through tf2onnx from the float .tflite, int8 as static QDQ.

Why from the .tflite: tf2onnx on a Keras graph with ``Conv2D(groups>1)`` writes an
unsupported ``StatefulPartitionedCall`` node; the fp32 TFLite graph (export mode, batch 1,
dilated depthwise fused) converts to plain ``Conv(group=g)`` / ``Conv(dilations=d)``.
The batch dimension is then made symbolic (``batch``) and checked with onnxruntime at
batch sizes > 1 during verification.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge.convert.spec import ConversionSpec
from hmff_edge.errors import ArtifactError
from hmff_edge.metadata import METADATA_KEY, TensorSpec, atomic_write_bytes

BATCH_DIM = "batch"


def convert(spec: ConversionSpec) -> dict:
    """Child process: ``spec.quantization`` none -> fp32 ONNX, int8 -> QDQ ONNX.

    An int8 spec of a QAT model (``qat``) converts the model's full-integer TFLite (float
    I/O) instead: its QDQ graph keeps the trained ranges. Otherwise int8 is onnxruntime's
    static quantization of the fp32 graph (``calib_method``).
    """
    qat = spec.quantization == "int8" and spec.qat
    if spec.quantization == "int8" and not qat:
        return _quantize(spec)
    from hmff_edge._lazy import require

    require("tensorflow")
    tf2onnx = require("tf2onnx")
    onnx = require("onnx")
    src = None if qat else spec.fp32_tflite
    with tempfile.TemporaryDirectory() as tmp:
        if not src:  # no tflite-fp32 target in this export: make one for ONNX only
            from hmff_edge.convert import to_tflite

            src = str(Path(tmp) / "model.tflite")
            to_tflite.convert(replace(spec, quantization="int8" if qat else "none",
                                      io_dtype="float32", out=src))
        proto, _ = tf2onnx.convert.from_tflite(src, opset=spec.opset)
    _dynamic_batch(proto)
    _rename_io(proto)
    onnx.checker.check_model(proto)
    atomic_write_bytes(spec.out, proto.SerializeToString())
    return {"path": spec.out}


def _dynamic_batch(proto: Any) -> None:
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM
    # Intermediate shapes inferred for batch 1 would pin the batch: drop them.
    del proto.graph.value_info[:]


def _rename_io(proto: Any) -> None:
    """``serving_default_input:0`` / ``Identity`` -> ``input`` / ``probabilities``."""
    from hmff_edge.convert.trace import INPUT_NAME, OUTPUT_NAME

    mapping = {proto.graph.input[0].name: INPUT_NAME, proto.graph.output[0].name: OUTPUT_NAME}
    for vi in (proto.graph.input[0], proto.graph.output[0]):
        vi.name = mapping[vi.name]
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]


class _Reader:
    """onnxruntime CalibrationDataReader over the calibration array, one image a batch."""

    def __init__(self, x: np.ndarray, name: str) -> None:
        self.x, self.name, self.i = x, name, 0

    def get_next(self) -> dict | None:
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


def _quantize(spec: ConversionSpec) -> dict:
    from hmff_edge._lazy import require

    q = require("onnxruntime.quantization")
    # quant_pre_process needs it and would fail, and be skipped below, on every graph.
    require("sympy")
    src = spec.fp32_onnx
    with tempfile.TemporaryDirectory() as tmp:
        if not src:
            src = str(Path(tmp) / "fp32.onnx")
            convert(replace(spec, quantization="none", out=src))
        pre = str(Path(tmp) / "pre.onnx")
        try:  # shape inference + graph fusions recommended before static quantization
            q.shape_inference.quant_pre_process(src, pre, skip_symbolic_shape=False)
        except Exception:  # a graph the optimizer cannot take: quantize it as it is
            pre = src
        reader_cls = type("_CalibReader", (_Reader, q.CalibrationDataReader), {})
        calib = np.load(spec.calib)
        out_tmp = str(Path(tmp) / "int8.onnx")
        q.quantize_static(
            pre, out_tmp, reader_cls(calib, _input_name(pre)),
            quant_format=q.QuantFormat.QDQ, per_channel=True,
            # uint8 activations: ONNX Runtime 1.32's x86 CPU provider fuses U8S8 QDQ into
            # QLinearConv / QLinearMul...; with int8 activations it left 41 of 42 convolutions
            # as DequantizeLinear -> float Conv (hmff_edge.bench.onnx_int8 checks this).
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=_CALIB[spec.calib_method](q),
        )
        atomic_write_bytes(spec.out, Path(out_tmp).read_bytes())
    return {"path": spec.out}


_CALIB = {
    "minmax": lambda q: q.CalibrationMethod.MinMax,
    "entropy": lambda q: q.CalibrationMethod.Entropy,
    "percentile": lambda q: q.CalibrationMethod.Percentile,
}


def _input_name(path: str) -> str:
    import onnx

    return onnx.load(path).graph.input[0].name


# ---------------------------------------------------------------- parent side


def op_histogram(path: str | Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


# Ops that only move or reshape data: in a QDQ graph they may sit between a DequantizeLinear
# and a QuantizeLinear without computing in float.
_PASSTHROUGH = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity",
                "Shape", "Gather", "Concat", "Slice", "Split"}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}


def float_compute_nodes(proto: Any) -> list[str]:
    """Compute nodes of a QDQ graph whose output is not requantized (they would run in
    float in any runtime): every compute node's outputs must feed a QuantizeLinear, except
    the graph output's producer chain after the last DequantizeLinear."""
    consumers: dict[str, list[Any]] = {}
    producer: dict[str, Any] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        for o in n.output:
            producer[o] = n
    constant = {i.name for i in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}

    def is_constant(name: str) -> bool:
        p = producer.get(name)
        return name in constant or (p is not None and p.op_type in ("DequantizeLinear",
                                                                     "Constant")
                                    and all(is_constant(i) for i in p.input))

    def requantized(name: str) -> bool:
        nxt = consumers.get(name, [])
        if name in outputs or not nxt:
            return True
        for c in nxt:
            if c.op_type == "QuantizeLinear":
                continue
            # A bias add after MatMul (tf2onnx's FULLY_CONNECTED): int32 bias in one kernel.
            if (c.op_type == "Add" and any(is_constant(i) for i in c.input if i != name)
                    and all(requantized(o) for o in c.output)):
                continue
            if c.op_type in _PASSTHROUGH and all(requantized(o) for o in c.output):
                continue
            return False
        return True

    return [f"{n.op_type} {n.name or n.output[0]}" for n in proto.graph.node
            if n.op_type not in _QDQ and n.op_type not in _PASSTHROUGH
            and not all(requantized(o) for o in n.output)]


def check_graph(path: str | Path, *, full_integer: bool = False) -> list[str]:
    """Problems: checker failure, fixed batch, ops onnxruntime cannot load; with
    ``full_integer``, compute nodes left in float between the QDQ pairs."""
    import onnx

    problems = []
    proto = onnx.load(str(path))
    if full_integer:
        floats = float_compute_nodes(proto)
        if floats:
            problems.append(f"not full-integer: {len(floats)} compute node(s) not requantized, "
                            f"e.g. {floats[0]!r} (a mixed-precision file is never published as "
                            "int8)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        problems.append(f"onnx.checker: {str(exc)[:300]}")
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            problems.append(f"{vi.name}: batch dimension is fixed ({dim.dim_value})")
    bad = sorted({n.op_type for n in proto.graph.node
                  if n.op_type in ("StatefulPartitionedCall", "PartitionedCall")})
    if bad:
        problems.append(f"unsupported ops {bad}")
    return problems


def embed_metadata(src: str | Path, dst: str | Path, meta_json: str) -> None:
    import onnx

    proto = onnx.load(str(src))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta_json
    atomic_write_bytes(dst, proto.SerializeToString())


def _session(path: str | Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ArtifactError(f"onnxruntime cannot load {str(path)!r}: {exc}") from exc


def io_specs(path: str | Path, labels: int) -> tuple[TensorSpec, TensorSpec]:
    s = _session(path)
    i, o = s.get_inputs()[0], s.get_outputs()[0]

    def shape(v):
        return [-1 if not isinstance(d, int) else d for d in v.shape]

    return (TensorSpec(name=i.name, dtype="float32", shape=shape(i)),
            TensorSpec(name=o.name, dtype="float32", shape=shape(o)))


def predict(path: str | Path, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities for normalized float ``x`` through the device runtime (see
    :func:`hmff_edge.convert.verify.predict_in_runtime`)."""
    from hmff_edge.convert.verify import predict_in_runtime

    return predict_in_runtime(path, x, batch)
