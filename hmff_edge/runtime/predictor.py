"""``Predictor``: one loaded classifier artifact with its metadata (TF-free).

Levels of use, from cheapest to most convenient:

* ``run(x)``: native tensor in (float32, or int8/uint8 for full-integer models), native
  tensor out. No conversion at all; what the server's binary path and the benchmark call.
* ``predict(x)``: normalized float batch in, float probabilities out (quantizes integer
  inputs and dequantizes integer outputs with the model's scale / zero point).
* ``preprocess(images)`` / ``classify(images, top_k)``: image paths or encoded bytes in,
  labelled top-k out, through :mod:`hmff_edge.preprocess` (the one shared preprocessing).

Thread safety: every method may be called from several threads. The TFLite backend
serializes ``run`` with a lock (the interpreter is not re-entrant), onnxruntime sessions are
thread-safe. The server gives each model one batching worker, so the lock is uncontended.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge import preprocess as pp
from hmff_edge.errors import ArtifactError, DataError
from hmff_edge.metadata import ArtifactMetadata, sidecar_path

ImageSource = str | os.PathLike | bytes


class Predictor:
    """A loaded ``.tflite`` / ``.onnx`` classifier. Create it with :func:`hmff_edge.runtime.load`."""

    def __init__(self, backend: Any, metadata: ArtifactMetadata, path: Path) -> None:
        self._backend = backend
        self.metadata = metadata
        self.path = path
        self.name = path.stem
        self.format = backend.kind
        self.threads = backend.threads
        self.labels: list[str] = list(metadata.labels)
        self.input_name: str = backend.input_name
        self.output_name: str = backend.output_name
        self.input_dtype: np.dtype = backend.input_dtype
        self.output_dtype: np.dtype = backend.output_dtype
        # -1 marks a resizable dimension (the batch).
        self.input_shape: tuple[int, ...] = tuple(backend.input_shape)
        self.output_shape: tuple[int, ...] = tuple(backend.output_shape)
        self.input_quant = _pick_quant(backend.input_quant, metadata.input, self.input_dtype,
                                       "input", path)
        self.output_quant = _pick_quant(backend.output_quant, metadata.output, self.output_dtype,
                                        "output", path)
        self._check_consistent()

    # -- shapes ---------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (the input shape without the batch dimension)."""
        if self.metadata.layout.upper() == "NCHW":
            return (self.metadata.channels, self.metadata.height, self.metadata.width)
        return (self.metadata.height, self.metadata.width, self.metadata.channels)

    def _check_consistent(self) -> None:
        if len(self.input_shape) != 4:
            raise ArtifactError(
                f"{str(self.path)!r}: expected a 4-D image input, got shape {list(self.input_shape)}"
            )
        for got, want in zip(self.input_shape[1:], self.sample_shape):
            if got > 0 and got != want:
                raise ArtifactError(
                    f"{str(self.path)!r}: model input shape {list(self.input_shape)} does not match "
                    f"its metadata ({self.metadata.layout} {list(self.sample_shape)})"
                )
        n_out = self.output_shape[-1] if self.output_shape else -1
        if n_out > 0 and n_out != len(self.labels):
            raise ArtifactError(
                f"{str(self.path)!r}: model has {n_out} outputs but its metadata lists "
                f"{len(self.labels)} labels"
            )

    # -- inference -------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """Native tensor in, native tensor out (batch dimension resized when it changes)."""
        return self._backend.run(x)

    def to_native(self, x: np.ndarray) -> np.ndarray:
        """Normalized float input -> the model's native input dtype (quantized if integer)."""
        if self.input_dtype.kind in "iu":
            scale, zero = self.input_quant  # type: ignore[misc]
            return pp.quantize(np.asarray(x, np.float32), scale, zero, self.input_dtype.name)
        return np.asarray(x, dtype=self.input_dtype)

    def to_probabilities(self, y: np.ndarray) -> np.ndarray:
        """Native output -> float32 probabilities (dequantized if integer)."""
        if self.output_dtype.kind in "iu":
            scale, zero = self.output_quant  # type: ignore[misc]
            return pp.dequantize(y, scale, zero)
        return np.asarray(y, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Normalized float batch ``(N, H, W, C)`` -> float32 probabilities ``(N, classes)``."""
        x = np.asarray(x)
        if x.ndim == len(self.sample_shape):
            x = x[None]
        if tuple(x.shape[1:]) != self.sample_shape:
            raise DataError(
                f"input batch has shape {list(x.shape)}, expected "
                f"[N, {', '.join(map(str, self.sample_shape))}]"
            )
        return self.to_probabilities(self.run(self.to_native(x)))

    # -- images ----------------------------------------------------------------------------
    def preprocess(self, images: Sequence[ImageSource] | ImageSource, *,
                   max_pixels: int | None = None) -> np.ndarray:
        """Image paths or encoded bytes -> normalized float32 batch, the way training saw them."""
        if isinstance(images, str | bytes | bytearray | os.PathLike):
            images = [images]
        m = self.metadata
        kw = {} if max_pixels is None else {"max_pixels": max_pixels}
        pixels = np.stack([pp.load_rgb(img, (m.height, m.width), **kw) for img in images])
        x = pp.normalize(pixels, m.mean, m.std)
        if m.layout.upper() == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x

    def classify(self, images: Sequence[ImageSource] | ImageSource, top_k: int = 5) -> list[list[dict]]:
        """Top-k ``{"label", "index", "probability"}`` per image, most probable first."""
        return self.top_k(self.predict(self.preprocess(images)), top_k)

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[list[dict]]:
        if k < 1:
            raise DataError(f"top_k must be at least 1, got {k}")
        probs = np.asarray(probs, np.float32).reshape(len(probs), -1)
        k = min(k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            [
                {"label": self.label(int(i)), "index": int(i), "probability": float(row[i])}
                for i in idx
            ]
            for row, idx in zip(probs, order)
        ]

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (the server's model status and ``predict --json``)."""
        return {
            "name": self.name,
            "path": str(self.path),
            "format": self.format,
            "model": self.metadata.model,
            "quantization": self.metadata.quantization,
            "labels": self.labels,
            "input": {"name": self.input_name, "dtype": self.input_dtype.name,
                      "shape": list(self.input_shape)},
            "output": {"name": self.output_name, "dtype": self.output_dtype.name,
                       "shape": list(self.output_shape)},
            "threads": self.threads,
        }

    def __repr__(self) -> str:
        return (
            f"Predictor({str(self.path)!r}, format={self.format}, input={self.input_dtype.name}"
            f"{list(self.input_shape)}, classes={len(self.labels)})"
        )


def _pick_quant(native, spec, dtype: np.dtype, which: str, path: Path) -> tuple[float, int] | None:
    """The model file's own quantization parameters win; metadata is the fallback."""
    if dtype.kind not in "iu":
        return None
    if native is not None:
        return native
    if spec is not None and spec.scale:
        return float(spec.scale), int(spec.zero_point or 0)
    raise ArtifactError(
        f"{str(path)!r}: {which} is {dtype.name} but neither the model nor its metadata gives a "
        "quantization scale / zero point"
    )


def load_metadata(path: Path, backend: Any) -> ArtifactMetadata:
    """The sidecar ``<stem>.json`` when present, else the metadata embedded in the file."""
    side = sidecar_path(path)
    if side.is_file():
        return ArtifactMetadata.from_json(side.read_bytes())
    raw = backend.embedded_metadata()
    if raw is None:
        raise ArtifactError(
            f"{str(path)!r} carries no hmff_edge metadata: no sidecar {str(side)!r} and none "
            "embedded in the file (re-export it with `hmff-edge export`)"
        )
    return ArtifactMetadata.from_json(raw)


def load(path: str | os.PathLike, *, threads: int | None = None,
         metadata: ArtifactMetadata | None = None) -> Predictor:
    """Load a ``.tflite`` or ``.onnx`` classifier with its metadata.

    ``threads`` is the engine's intra-op thread count (default: all cores). ``metadata``
    overrides the sidecar / embedded metadata. Raises :class:`ArtifactError` for a missing,
    corrupt or undescribed file.
    """
    from hmff_edge.runtime.backends import open_backend

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"model file {str(p)!r} does not exist")
    if threads is not None and threads < 1:
        raise ArtifactError(f"threads must be at least 1, got {threads}")
    backend = open_backend(p, threads)
    meta = metadata if metadata is not None else load_metadata(p, backend)
    return Predictor(backend, meta, p)
