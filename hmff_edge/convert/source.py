"""Resolve an export SOURCE (run folder, ``.keras`` file or variant name) to one ``.keras``
file plus what the artifacts must describe (labels, input size, normalization)."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmff_edge.errors import ArtifactError, ConfigError
from hmff_edge.metadata import DEFAULT_MEAN, DEFAULT_STD
from hmff_edge.train.runconfig import RunConfig


@dataclass
class ResolvedSource:
    """A model ready to be loaded in any process: a ``.keras`` path and its description."""

    kind: str  # run | keras | variant
    keras_path: Path
    model: str  # variant name ("custom" when unknown)
    img_size: int
    labels: list[str]
    mean: list[float] = field(default_factory=lambda: list(DEFAULT_MEAN))
    std: list[float] = field(default_factory=lambda: list(DEFAULT_STD))
    data: Any = None  # the run's training data spec (default calibration source)
    has_data: bool = False  # config.json names the data (None there means the digits)
    run_dir: Path | None = None
    origin: str = ""  # what the user typed
    config: dict[str, Any] = field(default_factory=dict)  # the run's config.json
    keras_model: Any = field(default=None, repr=False)  # loaded on demand in the parent
    interleaves: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def qat(self) -> dict[str, Any] | None:
        """The QAT record of a run written by ``hmff-edge qat`` (its model is fake-quantized:
        int8 converts with its trained ranges, and it is never fine-tuned again)."""
        return self.config.get("qat") or None


def resolve_source(source: str | os.PathLike, *, img_size: int | None = None,
                   classes: int | None = None, workdir: Path | None = None) -> ResolvedSource:
    """Turn SOURCE into a :class:`ResolvedSource`.

    A variant name is built with random weights (``img_size``, ``classes``), its BN
    statistics set from random inputs, and saved as ``workdir/model.keras`` so that
    conversion child processes can load it.
    Raises :class:`ArtifactError` for a missing or corrupt file/folder.
    """
    text = str(source)
    path = Path(source)
    if path.is_dir():
        return _from_run(path, text)
    if path.suffix == ".keras" or path.exists():
        if not path.is_file():
            raise ArtifactError(f"SOURCE {text!r} does not exist")
        if path.suffix != ".keras":
            raise ArtifactError(
                f"SOURCE {text!r} is not a .keras file or a run folder (got a {path.suffix or 'no'}"
                " suffix)"
            )
        _check_keras_zip(path)
        rc = RunConfig.load(path.parent) if (path.parent / "config.json").is_file() else None
        return _described(path, rc, "keras", text, run_dir=path.parent if rc else None,
                          img_size=img_size)
    if os.sep in text or text.endswith((".keras", ".h5", ".json")):
        raise ArtifactError(f"SOURCE {text!r} does not exist")
    return _from_variant(text, img_size=img_size, classes=classes, workdir=workdir)


def _from_run(path: Path, text: str) -> ResolvedSource:
    model = path / "model.keras"
    if not model.is_file():
        raise ArtifactError(f"run folder {text!r} has no model.keras (found: "
                            f"{', '.join(sorted(p.name for p in path.iterdir())[:10]) or 'nothing'})")
    _check_keras_zip(model)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ArtifactError(f"run folder {text!r} has no config.json")
    return _described(model, RunConfig.load(path), "run", text, run_dir=path)


def _described(model: Path, rc: RunConfig | None, kind: str, text: str, *,
               run_dir: Path | None, img_size: int | None = None) -> ResolvedSource:
    size = (rc.img_size if rc else None) or img_size
    if not size:
        size = _input_size_from_keras(model)
    labels = (rc.labels if rc else None) or None
    if labels is None and (run_dir is not None and (run_dir / "labels.txt").is_file()):
        labels = (run_dir / "labels.txt").read_text().split("\n")
        labels = [s for s in labels if s]
    if labels is None:
        labels = [f"class_{i}" for i in range(_num_classes_from_keras(model))]
    return ResolvedSource(
        kind=kind, keras_path=model, model=str((rc.train.model if rc else None) or "custom"),
        img_size=int(size), labels=[str(s) for s in labels],
        mean=[float(v) for v in (rc.mean if rc else DEFAULT_MEAN)],
        std=[float(v) for v in (rc.std if rc else DEFAULT_STD)],
        data=rc.data if rc else None, has_data=rc is not None and rc.data is not None,
        config=rc.to_dict() if rc else {},
        run_dir=run_dir, origin=text,
    )


def _from_variant(name: str, *, img_size: int | None, classes: int | None,
                  workdir: Path | None) -> ResolvedSource:
    try:
        from hmff_edge import models
    except ImportError as exc:  # the zoo is part of the package; say what is missing
        raise ArtifactError(f"SOURCE {name!r} is not a file or folder, and the model zoo cannot "
                            f"be imported to build it as a variant: {exc}") from exc
    known = models.list_models()
    if name not in known:
        raise ArtifactError(
            f"SOURCE {name!r} is not a file, a run folder or a model variant; variants: "
            f"{', '.join(known)}"
        )
    if workdir is None:
        raise ConfigError("a variant-name SOURCE needs a work directory to save the model in")
    size = img_size or 224
    n = classes or 10
    model = models.build_model(name, img_size=size, num_classes=n)
    # Random weights, but BN statistics from inputs: see hmff_edge.models.bn_stats.
    from hmff_edge.models.bn_stats import calibrate_random_model

    calibrate_random_model(model)
    path = Path(workdir) / "model.keras"
    model.save(path)
    return ResolvedSource(kind="variant", keras_path=path, model=name, img_size=size,
                          labels=[f"class_{i}" for i in range(n)], origin=name)


def _check_keras_zip(path: Path) -> None:
    """A ``.keras`` file is a zip with config.json; catch truncated/corrupt files early."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{str(path)!r} is not a valid .keras file: {exc}") from exc
    if "config.json" not in names or bad is not None:
        raise ArtifactError(f"{str(path)!r} is a corrupt .keras file "
                            f"({'bad member ' + bad if bad else 'no config.json inside'})")


def _keras_config(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("config.json"))


def _input_size_from_keras(path: Path) -> int:
    try:
        cfg = _keras_config(path)["config"]
        shape = cfg["layers"][0]["config"]["batch_shape"]
        return int(shape[1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ArtifactError(f"cannot tell the input size of {str(path)!r}; pass --img-size") from exc


def _num_classes_from_keras(path: Path) -> int:
    try:
        layers = _keras_config(path)["config"]["layers"]
        for layer in reversed(layers):
            units = layer.get("config", {}).get("units")
            if units:
                return int(units)
    except (KeyError, TypeError, ValueError):
        pass
    raise ArtifactError(f"cannot tell the number of classes of {str(path)!r}; pass --classes")
