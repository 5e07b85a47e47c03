"""The one conversion job handed to a child process (:mod:`hmff_edge.convert._child`).

The parent builds a :class:`ConversionSpec` per artifact (``pipeline._spec``; variants with
:func:`dataclasses.replace`), sends it as JSON, and the child's ``convert(spec)`` /
``diagnose(spec)`` get it back as the same dataclass. The JSON hop is strict: a key the
dataclass does not have is refused by name, so a misspelt field fails at the boundary
instead of being ignored by the child. TF-free: the child imports it before TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

# Fields that hold a path: kept as str so that the spec is plain JSON on both sides.
_PATH_FIELDS = ("keras", "out", "calib", "fp32_tflite", "fp32_onnx", "form_table")


@dataclass(frozen=True)
class ConversionSpec:
    """One conversion: which Keras model, to what, written where."""

    keras: str  # the .keras file to convert
    img_size: int  # square input size the graph is traced at
    quantization: str  # none | fp16 | dynamic | int8 | int16x8 (ExportOptions' names)
    out: str  # file (folder for a SavedModel) the child writes, without metadata
    calib: str | None = None  # .npy of normalized calibration images (int8, int16x8)
    io_dtype: str = "int8"  # input/output dtype of a full-integer TFLite file
    opset: int = 17  # ONNX opset for tf2onnx
    calib_method: str = "minmax"  # onnxruntime calibration: minmax | entropy | percentile
    # Float files this export already converted, reused instead of converting again
    # (ONNX fp32 goes through the fp32 TFLite; ONNX int8 quantizes the fp32 ONNX).
    fp32_tflite: str | None = None
    fp32_onnx: str | None = None
    optimize: str | None = None  # graph-form goal (hmff_edge.convert.forms); None: per quantization
    form_table: str | None = None  # a per-device form table to use instead of the shipped one
    # ONNX int8 of a QAT model: convert its full-integer TFLite, whose QDQ graph keeps the
    # trained ranges, instead of calibrating the fp32 graph again.
    qat: bool = False

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversionSpec:
        """The spec of :meth:`to_dict`'s output; a key that is not a field, or a missing
        required one, raises ``ValueError`` naming it."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown conversion spec key(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(known)}")
        missing = [f.name for f in fields(cls)
                   if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in data]
        if missing:
            raise ValueError(f"conversion spec lacks {', '.join(map(repr, missing))}")
        return cls(**data)
