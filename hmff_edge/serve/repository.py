"""Which model versions a server serves: the repository layout and version policies.

Three forms, the first as Triton and TensorFlow Serving lay out a model repository:

* ``REPO/<model>/<version>/model.tflite`` (or ``model.onnx``, with its sidecar
  ``model.json``); versions are positive integers, hidden folders (``.tmp-3``) are ignored
  so a version can be written next to the others and renamed into place;
* a folder of model files, each served as version 1 of the model named by its stem;
* a single model file, served as version 1 under its stem.

Clients only ever name a model through this table: a request's model name is a dictionary
key, never joined into a path, so no name can reach outside the repository. Files that are
symlinks resolving outside the repository are skipped for the same reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hmff_edge.errors import ConfigError
from hmff_edge.runtime import MODEL_SUFFIXES

log = logging.getLogger("hmff_edge.serve")


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions to serve: the ``latest`` N, ``all``, or ``specific`` ones."""

    kind: str = "latest"
    n: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``all`` or ``specific:1,3`` (the ``--versions`` flag)."""
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "latest":
                n = int(arg) if arg else 1
                if n < 1:
                    raise ValueError
                return cls("latest", n=n)
            if kind == "all" and not arg:
                return cls("all")
            if kind == "specific":
                vs = tuple(sorted({int(v) for v in arg.split(",")}))
                if not vs or min(vs) < 1:
                    raise ValueError
                return cls("specific", versions=vs)
        except ValueError:
            pass
        raise ConfigError(f"version policy must be latest, latest:N (N >= 1), all or "
                          f"specific:V1,V2 (positive integers); got {text!r}")

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of ``available``, ascending."""
        found = sorted(available)
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [v for v in found if v in self.versions]
        return found[-self.n:]

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.n}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"


@dataclass
class Scan:
    """One look at the repository: ``{model: {version: file}}`` after the policy, and the
    folders that do not follow the layout (each a message naming the folder)."""

    models: dict[str, dict[int, Path]]
    problems: list[str]
    found: dict[str, dict[int, Path]] = field(default_factory=dict)  # before the policy


def _model_files(folder: Path, base: Path) -> list[Path]:
    files = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in MODEL_SUFFIXES or not p.is_file():
            continue
        if not p.resolve().is_relative_to(base):
            log.warning("skipping %s: it resolves outside %s", p, base)
            continue
        files.append(p)
    return files


def _flat(files: list[Path]) -> dict[str, dict[int, Path]]:
    stems = [p.stem for p in files]
    # model.tflite next to model.onnx: keep both, named with their suffix.
    return {(p.stem if stems.count(p.stem) == 1 else p.name): {1: p} for p in files}


def _versions(model_dir: Path, base: Path, problems: list[str]) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for d in sorted(model_dir.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        if not d.name.isdigit() or int(d.name) < 1:
            problems.append(f"{d}: version folders must be positive integers (1, 2, ...)")
            continue
        files = _model_files(d, base)
        if len(files) != 1:
            what = "no .tflite or .onnx file" if not files else \
                f"{len(files)} model files ({', '.join(f.name for f in files)}); expected one"
            problems.append(f"{d}: {what}")
            continue
        out[int(d.name)] = files[0]
    if not out:
        problems.append(f"{model_dir}: no version folder with a model (expected "
                        f"{model_dir.name}/1/model.tflite or .onnx)")
    return out


def scan(root: str | Path, policy: VersionPolicy | None = None) -> Scan:
    """Read the repository at ``root`` (any of the three forms) under ``policy``."""
    policy = policy or VersionPolicy()
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in MODEL_SUFFIXES:
            raise ConfigError(f"{str(root)!r} is not a .tflite or .onnx model")
        return Scan({root.stem: {1: root}}, [], {root.stem: {1: root}})
    if not root.is_dir():
        raise ConfigError(f"model path {str(root)!r} does not exist")
    base = root.resolve()
    files = _model_files(root, base)
    if files:
        flat = _flat(files)
        return Scan(flat, [], flat)
    problems: list[str] = []
    models: dict[str, dict[int, Path]] = {}
    every: dict[str, dict[int, Path]] = {}
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        if ":" in d.name:  # ':' separates the name from the verb in /v1/models/NAME:predict
            problems.append(f"{d}: a model name cannot contain ':'")
            continue
        found = every[d.name] = _versions(d, base, problems)
        chosen = policy.select(list(found))
        if found and not chosen:
            problems.append(f"{d}: no version matches the policy {policy} "
                            f"(found {', '.join(map(str, sorted(found)))})")
        if chosen:
            models[d.name] = {v: found[v] for v in chosen}
    return Scan(models, problems, every)


def scan_or_raise(root: str | Path, policy: VersionPolicy | None = None) -> Scan:
    """:func:`scan` for start-up: any problem, or nothing to serve, is a :class:`ConfigError`."""
    s = scan(root, policy)
    if s.problems:
        raise ConfigError(f"model repository {str(root)!r} does not follow the layout "
                          "<model>/<version>/model.tflite|onnx: " + "; ".join(s.problems))
    if not s.models:
        raise ConfigError(f"no .tflite or .onnx model in {str(root)!r}")
    return s
