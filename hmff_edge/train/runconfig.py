"""``RunConfig``: the typed contents of a run folder's ``config.json``.

Written by ``train``; read by ``export`` (labels, input size, normalization, training data
for calibration), ``evaluate`` and quantization-aware training. The file stays one flat
JSON object: the :class:`TrainConfig` fields at the top level next to what the run found out
(labels, counts, versions, where its weights came from), so tools that only want
``img_size`` or ``labels`` read one key.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hmff_edge.errors import ArtifactError
from hmff_edge.metadata import atomic_write_bytes

from .config import EMA_MOMENTUM, TrainConfig, describe_schedule

CONFIG_NAME = "config.json"


@dataclass
class InitOrigin:
    """Where a fine-tuned run's starting weights came from."""

    source: str  # the .keras file that was loaded
    run: str | None  # its run folder, when it came from one
    model: str | None  # the source's variant name, when known
    labels: list[str] | None  # the source's class list, when known
    head: str  # "kept" (same classes) or "new" (re-initialized classifier)
    copied_layers: int = 0


@dataclass
class RunConfig:
    """A run's configuration and the facts its training recorded."""

    train: TrainConfig
    labels: list[str]
    data_kind: str = ""
    data_mode: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    skipped_files: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    class_weights: dict[str, float] | None = None
    init: InitOrigin | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # A QAT run's record (hmff_edge.quant.finetune): its settings and the float run it came from.
    qat: dict[str, Any] | None = None

    # -- what the other stages read ---------------------------------------------------
    @property
    def model(self) -> str:
        return str(self.train.model)

    @property
    def img_size(self) -> int:
        return int(self.train.img_size or 0)

    @property
    def mean(self) -> list[float]:
        return list(self.train.mean)

    @property
    def std(self) -> list[float]:
        return list(self.train.std)

    @property
    def data(self) -> str | None:
        return self.train.data

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    # -- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        t = self.train
        d = t.to_dict()
        d.update({
            "num_classes": self.num_classes, "labels": list(self.labels),
            "data_kind": self.data_kind, "data_mode": self.data_mode, "counts": self.counts,
            "skipped_files": self.skipped_files, "skipped_examples": self.skipped_examples,
            "class_weights": self.class_weights,
            "init": asdict(self.init) if self.init else None,
            "versions": self.versions,
            **({"qat": self.qat} if self.qat else {}),
            # Descriptions for a reader of the file; derived, never read back.
            "lr_schedule": describe_schedule(t) if t.lr is not None else "",
            "optimizer": "adam" + (f" with EMA of the weights (momentum {EMA_MOMENTUM})"
                                   if t.ema else ""),
            "loss": "sparse_categorical_crossentropy"
                    + (f" with label smoothing {t.label_smoothing}" if t.label_smoothing else ""),
            "augmentation": "random crop (shift <= 1/8 side, reflect), horizontal flip, "
                            "rotation <= 10 deg" if t.augment else "none",
        })
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if not isinstance(d, dict):
            raise ArtifactError(f"a run config must be a JSON object, got {type(d).__name__}")
        train = TrainConfig.from_dict(d.get("train", d))  # "train": files of older runs
        init = d.get("init")
        own = {f.name for f in fields(cls)} - {"train", "init"}
        extra = {k: d[k] for k in own if k in d and d[k] is not None}
        labels = extra.pop("labels", None) or []
        return cls(train=train, labels=[str(s) for s in labels],
                   init=InitOrigin(**init) if isinstance(init, dict) else None, **extra)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> RunConfig:
        """Read ``run_dir/config.json``; :class:`ArtifactError` naming the file otherwise."""
        path = Path(run_dir) / CONFIG_NAME
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read run config {str(path)!r}: {exc}") from exc
        try:
            return cls.from_dict(raw)
        except TypeError as exc:
            raise ArtifactError(f"run config {str(path)!r} is not one hmff-edge wrote: "
                                f"{exc}") from exc

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``run_dir/config.json`` atomically."""
        path = Path(run_dir) / CONFIG_NAME
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path
