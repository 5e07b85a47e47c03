"""The self-describing metadata every exported artifact carries (TF-free).

An artifact ``model.tflite`` / ``model.onnx`` is accompanied by a sidecar ``model.json``
(same stem) and holds the same JSON inside the file (ONNX ``metadata_props`` key
``hmff_edge``; a TFLite model-level metadata entry named ``hmff_edge``).
A runtime needs nothing else to turn pixels into labelled probabilities:

    x = (pixel / 255 - mean) / std            # float input
    q = round(x / input.scale) + input.zero_point   # integer (int8/uint8) input
    p = (q_out - output.zero_point) * output.scale  # integer output
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hmff_edge.errors import ArtifactError

FORMAT_VERSION = 1
METADATA_KEY = "hmff_edge"  # ONNX metadata_props key / TFLite metadata buffer name
PREPROCESSING = "x = (pixel / 255 - mean) / std"

# The normalization the training pipeline uses unless told otherwise: pixels to [-1, 1],
# the convention of Keras' MobileNet.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


@dataclass
class TensorSpec:
    """One input or output tensor as the runtime sees it."""

    name: str = ""
    dtype: str = "float32"  # float32 | float16 | int8 | uint8
    shape: list[int] = field(default_factory=list)  # -1 for a resizable (batch) dimension
    scale: float | None = None  # quantization, integer tensors only
    zero_point: int | None = None


@dataclass
class ArtifactMetadata:
    """Everything needed to run an exported classifier without the training code."""

    model: str  # variant name, e.g. "hmff-mobilenet-32ch"
    labels: list[str]
    height: int
    width: int
    channels: int = 3
    layout: str = "NHWC"
    mean: list[float] = field(default_factory=lambda: list(DEFAULT_MEAN))
    std: list[float] = field(default_factory=lambda: list(DEFAULT_STD))
    preprocessing: str = PREPROCESSING
    output_kind: str = "probabilities"  # the model ends in softmax
    format: str = ""  # savedmodel | tflite | onnx
    quantization: str = "none"  # none | fp16 | dynamic | int8
    input: TensorSpec = field(default_factory=TensorSpec)
    output: TensorSpec = field(default_factory=TensorSpec)
    extra: dict[str, Any] = field(default_factory=dict)  # source, hmff_edge version, ...
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.input, dict):
            self.input = TensorSpec(**self.input)
        if isinstance(self.output, dict):
            self.output = TensorSpec(**self.output)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ArtifactError(
                f"metadata mean/std must have {self.channels} entries, got mean={self.mean} "
                f"std={self.std}"
            )
        if any(s == 0 for s in self.std):
            raise ArtifactError(f"metadata std must be non-zero, got {self.std}")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactMetadata:
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("model", "labels", "height", "width") if k not in data]
        if missing:
            raise ArtifactError(f"metadata lacks required keys {missing}; got keys {sorted(data)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> ArtifactMetadata:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"metadata is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"metadata must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """``exports/model_int8.tflite`` -> ``exports/model_int8.json``."""
    p = Path(artifact)
    return p.with_suffix(".json")


def write_sidecar(artifact: str | os.PathLike, meta: ArtifactMetadata) -> Path:
    path = sidecar_path(artifact)
    atomic_write_bytes(path, meta.to_json().encode())
    return path


def read_sidecar(artifact: str | os.PathLike) -> ArtifactMetadata:
    path = sidecar_path(artifact)
    if not path.is_file():
        raise ArtifactError(f"no metadata sidecar {str(path)!r} next to {str(artifact)!r}")
    return ArtifactMetadata.from_json(path.read_bytes())


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a crash mid-write
    never leaves a truncated file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
