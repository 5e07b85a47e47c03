"""Which models a server serves, and under which names.

A file is served under its stem; a directory serves every ``.tflite`` / ``.onnx`` directly in
it. Clients only ever name a model through this table: a request's model name is a dictionary
key, never joined into a path, so no name can reach outside the served directory. Files in the
directory that are symlinks resolving outside it are skipped for the same reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hmff_edge.errors import ArtifactError, ConfigError, HmffEdgeError
from hmff_edge.runtime import MODEL_SUFFIXES, Predictor, load

log = logging.getLogger("hmff_edge.serve")


def model_files(root: Path) -> dict[str, Path]:
    """``{served name: file}`` for a model file or a directory of them."""
    if root.is_file():
        if root.suffix.lower() not in MODEL_SUFFIXES:
            raise ConfigError(f"{str(root)!r} is not a .tflite or .onnx model")
        return {root.stem: root}
    if not root.is_dir():
        raise ConfigError(f"model path {str(root)!r} does not exist")
    base = root.resolve()
    files = []
    for p in sorted(root.iterdir()):
        if p.suffix.lower() not in MODEL_SUFFIXES or not p.is_file():
            continue
        if not p.resolve().is_relative_to(base):
            log.warning("skipping %s: it resolves outside %s", p, base)
            continue
        files.append(p)
    stems = [p.stem for p in files]
    # model.tflite next to model.onnx: keep both, named with their suffix.
    return {(p.stem if stems.count(p.stem) == 1 else p.name): p for p in files}


def load_models(path: str | os.PathLike, *, threads: int | None = None) -> dict[str, Predictor]:
    """Load every model to serve. A single file must load; in a directory, files that fail
    (no metadata, corrupt) are skipped with a warning, and at least one must load."""
    root = Path(path)
    files = model_files(root)
    if not files:
        raise ConfigError(f"no .tflite or .onnx model in {str(root)!r}")
    models: dict[str, Predictor] = {}
    failures = []
    for name, file in files.items():
        try:
            models[name] = load(file, threads=threads)
        except HmffEdgeError as exc:
            if root.is_file():
                raise
            failures.append(f"{file.name}: {exc}")
            log.warning("skipping %s: %s", file, exc)
    if not models:
        raise ArtifactError(f"no model in {str(root)!r} could be loaded: " + "; ".join(failures))
    return models
