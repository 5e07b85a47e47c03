"""Lazy imports of heavy optional packages with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from hmff_edge.errors import MissingDependencyError

# module -> (pip extra, what it is for)
_EXTRAS = {
    "tensorflow": ("train", "training and conversion"),
    "keras": ("train", "training and conversion"),
    "tf2onnx": ("train", "ONNX export"),
    "onnx": ("train", "ONNX export"),
    "matplotlib": ("train", "plots"),
    "sklearn": ("train", "the embedded digits data set"),
    "onnxruntime": ("runtime", "running .onnx models"),
    "starlette": ("runtime", "the HTTP server"),
    "uvicorn": ("runtime", "the HTTP server"),
    "ai_edge_litert": ("runtime", "reading and running .tflite models"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra, purpose = _EXTRAS.get(top, ("all", "this feature"))
        raise MissingDependencyError(
            f"{module!r} is needed for {purpose} but is not installed ({exc}). "
            f"Install it with: pip install 'hmff-edge[{extra}]'"
        ) from exc


def keras() -> ModuleType:
    """Return Keras 3 with the TensorFlow backend, quieting TensorFlow's start-up logs."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    require("tensorflow")
    return require("keras")
