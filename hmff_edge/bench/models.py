"""Resolve a bench MODEL argument: an exported file, or a variant name exported on the fly.

Variant names are exported with random weights by :func:`hmff_edge.convert.export` in a child
process (:mod:`hmff_edge.bench._export`), so TensorFlow never enters the bench process. Exports
are cached under ``<cache>/<variant>-<size>px-<classes>c/`` (default: the user's cache folder,
see :func:`cache_dir`) so repeated runs compare the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hmff_edge.bench._export import EXPORT_RECIPE, INFO_NAME
from hmff_edge.errors import ArtifactError, ConfigError

# (runtime, quantization) -> the file hmff_edge.convert writes in an export folder
EXPORT_FILES = {("litert", "fp32"): "tflite_fp32.tflite", ("litert", "int8"): "tflite_int8.tflite",
                ("onnxruntime", "fp32"): "onnx_fp32.onnx", ("onnxruntime", "int8"): "onnx_int8.onnx",
                ("tensorflow", "fp32"): "savedmodel"}
QUANTS = ("fp32", "int8")


def cache_dir() -> Path:
    """Where variant exports are cached: ``$HMFF_EDGE_CACHE``, else ``$XDG_CACHE_HOME/hmff-edge``,
    else ``~/.cache/hmff-edge`` (never inside the installed package or a source tree)."""
    if os.environ.get("HMFF_EDGE_CACHE"):
        return Path(os.environ["HMFF_EDGE_CACHE"]) / "bench"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hmff-edge" / "bench"


def find_export(folder: Path, runtime: str, quant: str) -> Path | None:
    """The file for ``runtime``/``quant`` in an export folder, or None when it is not there."""
    path = folder / EXPORT_FILES[(runtime, quant)]
    return path if path.exists() else None




@dataclass
class ModelRef:
    """A file to benchmark and what is known about it."""

    path: str
    name: str  # variant name, or the file name
    format: str  # tflite | onnx | savedmodel | keras
    quantization: str = "fp32"
    variant: str | None = None
    img_size: int | None = None
    params: int | None = None
    macs: int | None = None
    exported_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_format(path: Path) -> str:
    if path.suffix in (".tflite", ".onnx", ".keras"):
        return path.suffix[1:]
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "savedmodel"
    raise ArtifactError(f"{str(path)!r} is not a .tflite, .onnx, .keras file or a SavedModel "
                        f"folder")


def describe_file(path: str | os.PathLike) -> ModelRef:
    """A :class:`ModelRef` for an existing file, with its sidecar metadata when present."""
    p = Path(path)
    fmt = file_format(p)
    ref = ModelRef(path=str(p), name=p.name, format=fmt)
    meta_path = p.with_suffix(".json") if p.is_file() else p.parent / f"{p.name}.json"
    for cand in (meta_path, p.parent / "model.json"):
        if cand.is_file():
            try:
                meta = json.loads(cand.read_text())
            except ValueError:
                continue
            if isinstance(meta, dict) and "model" in meta:
                extra = meta.get("extra") or {}
                ref.variant = meta.get("model")
                ref.name = f"{meta.get('model')} ({p.name})"
                ref.img_size = meta.get("height")
                q = meta.get("quantization", "none")
                ref.quantization = "fp32" if q in ("none", None) else q
                ref.params = extra.get("params") or extra.get("trainable_params")
                ref.macs = extra.get("macs")
                break
    return ref


def is_variant(name: str) -> bool:
    from hmff_edge.models.registry import REGISTRY

    return name.strip().lower() in REGISTRY


def resolve(spec: str, *, runtime: str, quant: str = "fp32", img_size: int = 224,
            classes: int = 10, cache: str | os.PathLike | None = None,
            timeout: float = 1800.0) -> ModelRef:
    """A file path as is; a variant name exported (cached) for ``runtime`` and ``quant``."""
    p = Path(spec)
    if p.exists():
        return describe_file(p)
    if not is_variant(spec):
        from hmff_edge.models.registry import list_models

        raise ConfigError(f"MODEL {spec!r} is neither an existing file nor a variant name; "
                          f"variants: {', '.join(list_models())}")
    if quant not in QUANTS:
        raise ConfigError(f"--quant must be one of {QUANTS}, got {quant!r}")
    if (runtime, quant) not in EXPORT_FILES:
        raise ConfigError(f"no {quant} export for runtime {runtime!r}")
    name = spec.strip().lower()
    folder = Path(cache or cache_dir()) / f"{name}-{img_size}px-{classes}c"
    info_path = folder / INFO_NAME
    drop_stale_export(folder)
    target = find_export(folder, runtime, quant)
    if target is None:
        export_variant(name, folder, img_size=img_size, classes=classes,
                       targets=[f"{runtime}:{quant}"], timeout=timeout)
        target = find_export(folder, runtime, quant)
    if target is None:
        raise ArtifactError(f"exporting {name} did not produce {EXPORT_FILES[(runtime, quant)]} "
                            f"in {folder}")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return ModelRef(path=str(target), name=name, format=file_format(target),
                    quantization=quant, variant=name, img_size=img_size,
                    params=info.get("params"), macs=info.get("macs"),
                    exported_by=info.get("exporter"))


def drop_stale_export(folder: Path) -> None:
    """Empty a cache folder written by an older export recipe (its files would not compare)."""
    if not folder.is_dir():
        return
    try:
        recipe = json.loads((folder / INFO_NAME).read_text()).get("recipe")
    except (OSError, ValueError):
        recipe = None
    if recipe != EXPORT_RECIPE:
        shutil.rmtree(folder, ignore_errors=True)


def export_variant(name: str, folder: Path, *, img_size: int, classes: int,
                   targets: list[str], timeout: float = 1800.0) -> None:
    """Export ``name`` into ``folder`` in a child process (TensorFlow stays out of this one)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "hmff_edge.bench._export", "--variant", name,
           "--img-size", str(img_size), "--classes", str(classes), "--out", str(folder),
           "--targets", ",".join(targets)]
    # The child must import the same hmff_edge as this process (a source tree or a wheel).
    here = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError(f"exporting {name} took longer than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise ArtifactError(f"exporting {name} ({', '.join(targets)}) failed (exit "
                            f"{proc.returncode}): {proc.stderr.strip()[-1500:]}")
