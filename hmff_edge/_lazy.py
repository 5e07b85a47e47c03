"""Lazy imports of heavy optional packages with an error that names the extra to install."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import MutableMapping
from types import ModuleType

from hmff_edge.errors import MissingDependencyError

# module -> (pip extra, what it is for)
_EXTRAS = {
    "tensorflow": ("train", "training and conversion"),
    "keras": ("train", "training and conversion"),
    "tf2onnx": ("train", "ONNX export"),
    "onnx": ("train", "ONNX export"),
    "sympy": ("train", "ONNX int8 quantization (onnxruntime's pre-processing)"),
    "matplotlib": ("train", "plots"),
    "sklearn": ("train", "the embedded digits data set"),
    "onnxruntime": ("runtime", "running .onnx models"),
    "starlette": ("runtime", "the HTTP server"),
    "uvicorn": ("runtime", "the HTTP server"),
    "ai_edge_litert": ("runtime", "reading and running .tflite models"),
}


def tensorflow_env_defaults(env: MutableMapping[str, str] | None = None,
                            system: str | None = None, machine: str | None = None) -> None:
    """Environment TensorFlow reads once, at import: set what the user left unset.

    ``TF_ENABLE_ONEDNN_OPTS=1`` on Linux x86-64. TensorFlow turns its oneDNN kernels on by
    default there only for CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX; without them
    a grouped ``conv2d`` has no CPU gradient (HMFF's grouped 1x1s then train through the
    matmul fallback), and training with Eigen's kernels ran 1.4-1.8x slower for HMFF and over
    10x slower for MobileNetV1 (``bench/results/train_speed_onednn.md``). An explicit value
    always wins.
    """
    env = os.environ if env is None else env
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if system == "Linux" and machine in ("x86_64", "amd64"):
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra."""
    if module.split(".")[0] in ("tensorflow", "keras") and "tensorflow" not in sys.modules:
        tensorflow_env_defaults()
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
    """Return Keras 3 with the TensorFlow backend (see :func:`tensorflow_env_defaults`)."""
    require("tensorflow")
    return require("keras")
