"""The two inference engines behind :class:`~hmff_edge.runtime.Predictor` (TF-free).

Each backend exposes the same small surface: input/output name, dtype, shape (``-1`` for a
resizable batch dimension), native quantization parameters, embedded metadata bytes, and
``run(x) -> y`` on native tensors. ``run`` is safe to call from several threads: the TFLite
interpreter is not re-entrant, so its backend serializes calls with a lock; onnxruntime's
``InferenceSession.run`` is documented thread-safe and is called without one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from hmff_edge._lazy import require
from hmff_edge.errors import ArtifactError, MissingDependencyError
from hmff_edge.metadata import METADATA_KEY


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class TFLiteBackend:
    """``ai_edge_litert.interpreter.Interpreter``, else ``tflite_runtime.interpreter``."""

    kind = "tflite"

    def __init__(self, path: Path, threads: int | None) -> None:
        interpreter_cls = _tflite_interpreter_class()
        self.threads = threads or _default_threads()
        try:
            self._interp = interpreter_cls(model_path=str(path), num_threads=self.threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"cannot load TFLite model {str(path)!r}: {exc}") from exc
        self.path = path
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        _check_single_io(path, len(ins), len(outs))
        self._in, self._out = ins[0], outs[0]
        self._in_index, self._out_index = self._in["index"], self._out["index"]
        self.input_name, self.output_name = self._in["name"], self._out["name"]
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.input_shape = _signature(self._in)
        self.output_shape = _signature(self._out)
        self.input_quant = _quant(self._in)
        self.output_quant = _quant(self._out)
        self._batch = int(self._in["shape"][0])
        self._lock = threading.Lock()

    def embedded_metadata(self) -> bytes | None:
        from hmff_edge.runtime.tflite_metadata import read_tflite_metadata

        return read_tflite_metadata(self.path).get(METADATA_KEY)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        with self._lock:
            if x.shape[0] != self._batch:
                # Re-planning costs far less than an inference; the shape stays cached for
                # as long as the batch size does not change.
                self._interp.resize_tensor_input(self._in_index, list(x.shape), strict=False)
                self._interp.allocate_tensors()
                self._batch = x.shape[0]
            self._interp.set_tensor(self._in_index, x)
            self._interp.invoke()
            return self._interp.get_tensor(self._out_index)


class OnnxBackend:
    """onnxruntime ``InferenceSession`` on the CPU execution provider."""

    kind = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        ort = require("onnxruntime")
        self.threads = threads or _default_threads()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"cannot load ONNX model {str(path)!r}: {exc}") from exc
        self.path = path
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        _check_single_io(path, len(ins), len(outs))
        self.input_name, self.output_name = ins[0].name, outs[0].name
        self.input_dtype = _ort_dtype(ins[0].type, path)
        self.output_dtype = _ort_dtype(outs[0].type, path)
        self.input_shape = [d if isinstance(d, int) and d > 0 else -1 for d in ins[0].shape]
        self.output_shape = [d if isinstance(d, int) and d > 0 else -1 for d in outs[0].shape]
        # Quantized ONNX exports (QDQ) keep float inputs/outputs.
        self.input_quant = None
        self.output_quant = None
        self._out_names = [self.output_name]

    def embedded_metadata(self) -> bytes | None:
        value = self._sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        return value.encode() if value is not None else None

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        return self._sess.run(self._out_names, {self.input_name: x})[0]


def open_backend(path: Path, threads: int | None):
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return TFLiteBackend(path, threads)
    if suffix == ".onnx":
        return OnnxBackend(path, threads)
    raise ArtifactError(f"unsupported model file {str(path)!r}: expected a .tflite or .onnx file")


def _tflite_interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError as exc:
        raise MissingDependencyError(
            "running .tflite models needs ai-edge-litert (or tflite-runtime), which is not "
            f"installed ({exc}). Install it with: pip install 'hmff-edge[runtime]'"
        ) from exc


def _signature(detail: dict) -> list[int]:
    sig = detail.get("shape_signature")
    shape = sig if sig is not None and len(sig) else detail["shape"]
    return [int(d) for d in shape]


def _quant(detail: dict) -> tuple[float, int] | None:
    if np.dtype(detail["dtype"]).kind not in "iu":
        return None
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if scale else None


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _ort_dtype(name: str, path: Path) -> np.dtype:
    if name not in _ORT_TYPES:
        raise ArtifactError(f"{str(path)!r} uses tensor type {name!r}, which is not supported")
    return np.dtype(_ORT_TYPES[name])


def _check_single_io(path: Path, n_in: int, n_out: int) -> None:
    if n_in != 1 or n_out != 1:
        raise ArtifactError(
            f"{str(path)!r} has {n_in} inputs and {n_out} outputs; a classifier "
            "artifact has exactly one of each"
        )
