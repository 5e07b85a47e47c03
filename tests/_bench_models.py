"""Tiny ONNX models for the bench tests, made with the ``onnx`` helper (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tile_model(path: Path, mib_per_sample: int = 64) -> Path:
    """[N, 1024] -> Tile to [N, 1024 * r] -> ReduceSum: ``mib_per_sample`` MiB per image,
    so a small ``--memory-limit`` is crossed at a predictable batch size."""
    from onnx import TensorProto, helper, numpy_helper

    repeat = mib_per_sample * 2**20 // (1024 * 4)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    reps = numpy_helper.from_array(np.array([1, repeat], np.int64), "reps")
    ax = numpy_helper.from_array(np.array([1], np.int64), "ax")
    nodes = [helper.make_node("Tile", ["x", "reps"], ["t"]),
             helper.make_node("ReduceSum", ["t", "ax"], ["y"], keepdims=1)]
    graph = helper.make_graph(nodes, "tile", [x], [y], [reps, ax])
    return _save(graph, path)


def tiny_classifier(path: Path, size: int = 8, classes: int = 3) -> Path:
    """A small NHWC "classifier": flatten -> MatMul -> Softmax, free batch dimension."""
    from onnx import TensorProto, helper, numpy_helper

    feat = size * size * 3
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((feat, classes)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, feat], np.int64), "shape")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", size, size, 3])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["l"]),
             helper.make_node("Softmax", ["l"], ["probs"], axis=-1)]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w, shape])
    return _save(graph, path)


def _save(graph, path: Path) -> Path:
    """Opset 17 / IR 8 model from ``graph``, checked, written to ``path``."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
