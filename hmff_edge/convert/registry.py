"""One exporter per format behind a small registry.

An exporter bundles the child-process ``convert(spec)`` with the parent-side functions the
orchestrator needs: op histogram, graph checks, metadata embedding, tensor specs and a
``predict`` that runs the artifact in its real runtime for verification.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmff_edge.metadata import TensorSpec


@dataclass(frozen=True)
class Exporter:
    format: str
    module: str  # its ``convert(spec)`` runs in a child process
    op_histogram: Callable[[Path], Counter]
    embed_metadata: Callable[[Path, Path, str], None]
    io_specs: Callable[[Path, int], tuple[TensorSpec, TensorSpec]]
    predict: Callable[[Path, np.ndarray], np.ndarray]
    is_dir: bool = False


def get_exporter(fmt: str) -> Exporter:
    """The exporter for ``fmt`` (imports its module lazily)."""
    if fmt == "tflite":
        from hmff_edge.convert import to_tflite as m
    elif fmt == "onnx":
        from hmff_edge.convert import to_onnx as m
    elif fmt == "savedmodel":
        from hmff_edge.convert import to_savedmodel as m
    else:
        from hmff_edge.errors import ConfigError

        raise ConfigError(f"unknown format {fmt!r}")
    return Exporter(format=fmt, module=m.__name__, op_histogram=m.op_histogram,
                    embed_metadata=m.embed_metadata, io_specs=m.io_specs, predict=m.predict,
                    is_dir=fmt == "savedmodel")
