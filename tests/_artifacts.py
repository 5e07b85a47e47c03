"""Builders for small self-describing test artifacts, independent of the exporter.

* :func:`onnx_classifier` needs only ``onnx`` (fast, no TensorFlow): NHWC input
  ``[N, S, S, 3]`` -> Transpose -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Softmax.
* :func:`tflite_classifier` converts a tiny Keras model (TensorFlow; use in ``tf`` tests),
  optionally full-integer int8, and embeds the metadata with TF's flatbuffer schema.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hmff_edge.metadata import METADATA_KEY, ArtifactMetadata, TensorSpec, write_sidecar

LABELS3 = ["cat", "dog", "frog"]


def make_metadata(fmt: str, size: int, labels=LABELS3, *, quantization: str = "none",
                  input: TensorSpec | None = None, output: TensorSpec | None = None,
                  model: str = "tiny-test") -> ArtifactMetadata:
    return ArtifactMetadata(
        model=model, labels=list(labels), height=size, width=size, format=fmt,
        quantization=quantization,
        input=input or TensorSpec(name="input", dtype="float32", shape=[-1, size, size, 3]),
        output=output or TensorSpec(name="probabilities", dtype="float32", shape=[-1, len(labels)]),
    )


def onnx_classifier(path: str | Path, *, size: int = 8, labels=LABELS3, seed: int = 0,
                    sidecar: bool = True, embed: bool = True, channels_mid: int = 4) -> Path:
    """Write a tiny ONNX classifier with a dynamic batch dimension and its metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    rng = np.random.default_rng(seed)
    n = len(labels)
    w1 = rng.normal(0, 0.5, (channels_mid, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (channels_mid,)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (n, channels_mid, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("GlobalAveragePool", ["c2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["logits"], axis=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
                     numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = make_metadata("onnx", size, labels)
    if embed:
        helper.set_model_props(model, {METADATA_KEY: meta.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if sidecar:
        write_sidecar(path, meta)
    return path


def embed_tflite_metadata(model_bytes: bytes, name: str, data: bytes) -> bytes:
    """Add a model-level metadata entry through TF's generated schema (object API)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    buf = schema.BufferT()
    buf.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    if model.metadata is None:
        model.metadata = []
    model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_classifier(path: str | Path, *, size: int = 8, labels=LABELS3, int8: bool = False,
                      sidecar: bool = True, embed: bool = True, seed: int = 0) -> Path:
    """Convert a tiny Keras classifier to TFLite (float32, or full-integer int8)."""
    import tensorflow as tf

    from hmff_edge._lazy import keras

    k = keras()
    k.utils.set_random_seed(seed)
    n = len(labels)
    model = k.Sequential([
        k.Input((size, size, 3)),
        k.layers.Conv2D(4, 3, padding="same", activation="relu"),
        k.layers.GlobalAveragePooling2D(),
        k.layers.Dense(n, activation="softmax"),
    ])
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    quant = "none"
    if int8:
        rng = np.random.default_rng(seed)

        def rep():
            for _ in range(8):
                yield [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        quant = "int8"
    data = conv.convert()
    dtype = "int8" if int8 else "float32"
    meta = make_metadata("tflite", size, labels, quantization=quant,
                         input=TensorSpec(name="input", dtype=dtype, shape=[-1, size, size, 3]),
                         output=TensorSpec(name="probabilities", dtype=dtype, shape=[-1, n]))
    if embed:
        data = embed_tflite_metadata(data, METADATA_KEY, meta.to_json().encode())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if sidecar:
        write_sidecar(path, meta)
    # Keep the reference model around for comparisons.
    tflite_classifier.last_keras_model = model  # type: ignore[attr-defined]
    return path


# -- a real server process for the serve tests ------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m hmff_edge serve ...`` on 127.0.0.1 and a free port, ready when started."""

    def __init__(self, model: str | Path, *args: str, env: dict | None = None) -> None:
        import os
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        repo = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hmff_edge", "serve", str(model), "--port", str(self.port), *args],
            cwd=repo, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.proc.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self, timeout: float = 30.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout else ""
