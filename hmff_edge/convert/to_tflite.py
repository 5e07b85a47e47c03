"""TFLite export: fp32, fp16, dynamic-range and full-integer int8, builtin ops only.

Child side (:func:`convert`) converts the frozen batch-1 export graph; parent side reads
the op histogram, embeds the metadata and runs the file in LiteRT for verification.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge.convert.spec import ConversionSpec
from hmff_edge.errors import ArtifactError
from hmff_edge.metadata import METADATA_KEY, TensorSpec, atomic_write_bytes

# Ops that mean a broken or slow graph in LiteRT.
FORBIDDEN_OPS = {
    "SPACE_TO_BATCH_ND": "dilated depthwise was not fused (traced with a dynamic batch?)",
    "BATCH_TO_SPACE_ND": "dilated depthwise was not fused (traced with a dynamic batch?)",
    "CUSTOM": "custom ops do not run in a stock LiteRT runtime",
    "SHAPE": "a dynamic reshape (Keras Reshape layer) splits the XNNPACK delegate",
    "STRIDED_SLICE": "a strided-slice interleave (one op per step) or a dynamic reshape",
    "BATCH_MATMUL": "a grouped 1x1 left as einsum/matmul instead of a grouped CONV_2D",
}


def convert(spec: ConversionSpec) -> dict:
    """Child process: Keras file -> ``spec.out`` (.tflite without metadata)."""
    from hmff_edge._lazy import require
    from hmff_edge.convert.trace import TRACE_BATCH

    tf = require("tensorflow")
    conv = _converter(spec, tf)
    data = unpin_batch(conv.convert(), TRACE_BATCH)
    atomic_write_bytes(spec.out, data)
    return {"path": spec.out, "bytes": len(data),
            "graph_forms": getattr(conv, "hmff_graph_forms", None),
            "int8_activations": getattr(conv, "hmff_int8_activations", None)}


def _converter(spec: ConversionSpec, tf) -> Any:
    """A configured ``TFLiteConverter`` for the spec's quantization (child process)."""
    from hmff_edge.convert import forms
    from hmff_edge.convert.int8_activations import rewrite_hard_swish
    from hmff_edge.convert.trace import TRACE_BATCH, frozen_function, load_keras

    model = load_keras(spec.keras)
    q = spec.quantization
    # int8 hard_swish in a spelling XNNPACK takes whole, its 1/6 folded into the next weights.
    activations = rewrite_hard_swish(model) if q == "int8" else None

    # The graph form of each grouped 1x1 (hmff_edge.convert.forms), recorded for metadata.
    plan = forms.plan_for_model(model, spec.img_size, q, spec.optimize, spec.form_table)
    with forms.use_forms(plan.layer_forms()):
        fn = frozen_function(model, spec.img_size)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.hmff_graph_forms = plan.to_dict()
    conv.hmff_int8_activations = activations
    # Builtins only: a graph needing Flex (SELECT_TF_OPS) fails here instead of at run time.
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if q in ("fp16", "dynamic", "int8", "int16x8"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if q == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    elif q in ("int8", "int16x8"):
        calib = np.load(spec.calib)

        def representative():  # batches of the traced size, wrapping around
            for i in range(0, len(calib), TRACE_BATCH):
                idx = [(i + k) % len(calib) for k in range(TRACE_BATCH)]
                yield [calib[idx]]

        conv.representative_dataset = representative
    if q == "int8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[spec.io_dtype]
        conv.inference_input_type = io
        conv.inference_output_type = io
    elif q == "int16x8":  # float I/O around an int16-activation graph
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return conv


def diagnose(spec: ConversionSpec) -> dict:
    """Child process: the per-layer int8 error of a post-training conversion of the spec.

    TensorFlow's ``QuantizationDebugger`` runs each quantized op against its float version
    on the calibration images; ``rmse/scale`` of an op's output is its error in
    quantization steps (0.289 is pure rounding noise of a uniform step).
    """
    import csv
    import io

    from hmff_edge._lazy import require

    tf = require("tensorflow")
    conv = _converter(replace(spec, quantization="int8", io_dtype="float32"), tf)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=conv.representative_dataset)
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    rows = []
    for r in csv.DictReader(buf):
        scale = float(r.get("scale") or 0.0)
        mse = float(r.get("mean_squared_error") or 0.0)
        rows.append({"op": r.get("op_name", ""), "tensor": r.get("tensor_name", ""),
                     "index": len(rows), "scale": scale,
                     "rmse_scale": (mse ** 0.5) / scale if scale > 0 else None,
                     "range": [float(r["min"]) if r.get("min") else None,
                               float(r["max"]) if r.get("max") else None],
                     "max_abs_error": float(r.get("max_abs_error") or 0.0)})
    return {"layers": rows}


# ---------------------------------------------------------------- parent side


def float_tensors(path: str | Path) -> list[str]:
    """Activation tensors that are not integer in a file published as full-integer, except
    the graph's own float input/output (float I/O is one QUANTIZE in, one DEQUANTIZE out)."""
    schema = _schema()
    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    integer = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT32}
    found = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        ends = {sg.Inputs(i) for i in range(sg.InputsLength())} | {
            sg.Outputs(i) for i in range(sg.OutputsLength())}
        for j in range(sg.OperatorsLength()):
            op = sg.Operators(j)
            for k in range(op.OutputsLength()):
                t = op.Outputs(k)
                tensor = sg.Tensors(t)
                if t not in ends and tensor.Type() not in integer:
                    found.append((tensor.Name() or b"").decode(errors="replace"))
    return found


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def unpin_batch(data: bytes, traced: int) -> bytes:
    """Re-declare a graph traced at a fixed batch as batch 1, resizable.

    Every activation tensor (no constant data) of rank >= 2 whose leading dimension is the
    traced batch gets shape ``[1, ...]`` and shape signature ``[-1, ...]``, as TF writes for
    a dynamic-batch model; the interpreter recomputes shapes on ``allocate_tensors`` and
    the graph's reshapes use ``-1`` for the batch (verification runs several batch sizes).
    """
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    for sg in model.subgraphs:
        for t in sg.tensors:
            buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
            constant = buf is not None and buf.data is not None and len(buf.data) > 0
            shape = list(t.shape) if t.shape is not None else []
            if constant or len(shape) < 2 or shape[0] != traced:
                continue
            t.shape = np.asarray([1, *shape[1:]], np.int32)
            t.shapeSignature = np.asarray([-1, *shape[1:]], np.int32)
    return _pack(model)


def _pack(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_histogram(path: str | Path) -> Counter:
    """Operator name -> count over every subgraph (``FLEX_*`` / custom names kept)."""
    schema = _schema()
    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = names.get(code, f"OP_{code}")
        if name == "CUSTOM":
            custom = (oc.CustomCode() or b"").decode()
            name = f"FLEX_{custom[4:]}" if custom.startswith("Flex") else f"CUSTOM:{custom}"
        codes.append(name)
    hist: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for j in range(sg.OperatorsLength()):
            hist[codes[sg.Operators(j).OpcodeIndex()]] += 1
    return hist


def check_graph(hist: Counter, *, max_transposes: int | None,
                path: str | Path | None = None, full_integer: bool = False) -> list[str]:
    """Problems with a TFLite op histogram (empty list = a clean graph); with
    ``full_integer``, also every float activation tensor of the file at ``path``."""
    problems = []
    if full_integer and path is not None:
        floats = float_tensors(path)
        if floats:
            problems.append(f"not full-integer: {len(floats)} float activation tensor(s), e.g. "
                            f"{floats[0][:80]!r} (a mixed-precision file is never published as "
                            "int8)")
    for op, n in sorted(hist.items()):
        base = "CUSTOM" if op.startswith(("CUSTOM:", "FLEX_")) else op
        if base in FORBIDDEN_OPS:
            problems.append(f"{n} x {op}: {FORBIDDEN_OPS[base]}")
    if max_transposes is not None and hist.get("TRANSPOSE", 0) > max_transposes:
        problems.append(
            f"{hist['TRANSPOSE']} TRANSPOSE ops for {max_transposes} channel interleaves "
            "(expected at most one each)"
        )
    return problems


def embed_metadata(src: str | Path, dst: str | Path, meta_json: str) -> None:
    """Copy ``src`` to ``dst`` with a model-level metadata entry ``hmff_edge`` whose buffer
    holds the UTF-8 JSON (replacing an older entry of that name)."""
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(Path(src).read_bytes(), 0))
    buf = schema.BufferT()
    buf.data = np.frombuffer(meta_json.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name) != METADATA_KEY]
    model.metadata.append(entry)
    atomic_write_bytes(dst, _pack(model))


def _interpreter(path: str | Path, threads: int = 1) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - fall back to TF's deprecated copy
        from tensorflow.lite import Interpreter
    try:
        return Interpreter(model_path=str(path), num_threads=threads)
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(f"LiteRT cannot load {str(path)!r}: {exc}") from exc


def io_specs(path: str | Path, labels: int) -> tuple[TensorSpec, TensorSpec]:
    """Input/output dtype, resizable shape and quantization as LiteRT reports them."""
    it = _interpreter(path)
    specs = []
    for d in (it.get_input_details()[0], it.get_output_details()[0]):
        scale, zp = d["quantization"]
        integer = np.dtype(d["dtype"]).kind in "iu"
        shape = [int(v) for v in d["shape"]]
        shape[0] = -1
        specs.append(TensorSpec(name=d["name"], dtype=np.dtype(d["dtype"]).name, shape=shape,
                                scale=float(scale) if integer else None,
                                zero_point=int(zp) if integer else None))
    return specs[0], specs[1]


def predict(path: str | Path, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """Probabilities for normalized float ``x`` through the device runtime (see
    :func:`hmff_edge.convert.verify.predict_in_runtime`)."""
    from hmff_edge.convert.verify import predict_in_runtime

    return predict_in_runtime(path, x, batch)
