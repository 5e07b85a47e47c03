"""The training configuration, its paper defaults and the learning-rate schedule."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hmff_edge.errors import ConfigError
from hmff_edge.metadata import DEFAULT_MEAN, DEFAULT_STD

STRATEGIES = ("default", "mirrored", "multi-worker")
SCHEDULES = ("step", "cosine")
EMA_MOMENTUM = 0.99  # Keras' default: an average over roughly the last 100 steps

# Section 4.2 of the paper: Adam, lr0 1e-3, x0.75 every 10 epochs, batch 64, 50 epochs,
# 224x224 input, cross-entropy, Glorot init (the Keras default), augmentation.
PAPER_DEFAULTS: dict[str, Any] = {
    "model": "hmff-mobilenet-32ch",
    "img_size": 224,
    "epochs": 50,
    "batch_size": 64,
    "lr": 1e-3,
}

# `hmff-edge train` with no --data trains on the embedded 8x8 digits: a 32 px input and a
# few epochs keep the first command to a couple of minutes on a 2-core CPU.
DIGITS_DEFAULTS: dict[str, Any] = {
    "model": "hmff-mobilenet-16ch",
    "img_size": 32,
    "epochs": 8,
    "batch_size": 32,
    "lr": 1e-3,
}

# Fields that define what is trained: a --resume with a different value is refused.
IDENTITY_FIELDS = ("model", "data", "img_size", "batch_size", "lr", "lr_decay", "lr_step",
                   "val_split", "test_data", "train_limit", "augment", "seed", "dropout", "mean",
                   "std", "init_from", "freeze_epochs", "label_smoothing", "ema", "class_weight",
                   "schedule", "warmup_epochs", "mixed_precision")


@dataclass
class TrainConfig:
    """Everything `hmff-edge train` needs; ``None`` means "the default for this data"."""

    out: str
    model: str | None = None
    data: str | None = None  # None -> embedded digits
    img_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_decay: float = 0.75
    lr_step: int = 10
    val_split: float = 0.1
    test_data: str | None = None
    augment: bool = True
    seed: int = 0
    early_stopping: int | None = None  # patience in epochs on val_accuracy; None = off
    strategy: str = "default"
    dropout: float = 0.0
    mean: list[float] = field(default_factory=lambda: list(DEFAULT_MEAN))
    std: list[float] = field(default_factory=lambda: list(DEFAULT_STD))
    cache_gb: float = 4.0  # decoded images up to this size are held in memory
    train_limit: int | None = None  # use a fixed random subset of N training images
    bn_recalibrate: int = 50  # batches for precise BN after each epoch; 0 = off
    # Recipe options beyond the paper; each off by default so the paper's recipe is the default.
    init_from: str | None = None  # run folder or .keras file whose weights start the training
    freeze_epochs: int = 0  # with init_from: epochs that train only the classifier head
    label_smoothing: float = 0.0
    ema: bool = False  # evaluate, checkpoint and export the weights' moving average
    class_weight: str = "none"  # none | auto (inverse frequency) | path to a JSON {class: weight}
    schedule: str = "step"  # step (the paper's) | cosine
    warmup_epochs: int = 0  # linear ramp to lr over the first N epochs
    mixed_precision: bool = False  # mixed_float16 (GPU only)
    tensorboard: bool = False  # scalars per epoch under RUN/tensorboard/

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` replaced by the paper (or digits) default; validated."""
        base = DIGITS_DEFAULTS if self.data in (None, "digits") else PAPER_DEFAULTS
        values = asdict(self)
        for k, v in base.items():
            if values.get(k) is None:
                values[k] = v
        if values["data"] is None:
            values["data"] = "digits"  # explicit in config.json; resolve_source accepts it
        elif os.path.exists(values["data"]):
            # Absolute, so that export/evaluate find it from any working directory.
            values["data"] = os.path.abspath(values["data"])
        for key in ("test_data", "init_from"):
            if values[key] and os.path.exists(values[key]):
                values[key] = os.path.abspath(values[key])
        if values["class_weight"] not in ("auto", "none") and os.path.isfile(values["class_weight"]):
            values["class_weight"] = os.path.abspath(values["class_weight"])
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.img_size is not None and self.img_size < 8:
            raise ConfigError(f"--img-size must be at least 8, got {self.img_size}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if not 0.0 < self.val_split < 1.0:
            raise ConfigError(f"--val-split must be between 0 and 1 (exclusive), got {self.val_split}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise ConfigError(f"--early-stopping must be at least 1 epoch, got {self.early_stopping}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr_step < 1 or not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr schedule needs lr_step >= 1 and 0 < lr_decay <= 1, "
                              f"got {self.lr_step}, {self.lr_decay}")
        self._validate_recipe()

    def _validate_recipe(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, "
                              f"got {self.schedule!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.freeze_epochs < 0 or self.warmup_epochs < 0:
            raise ConfigError(f"--freeze-epochs and --warmup-epochs must be >= 0, got "
                              f"{self.freeze_epochs} and {self.warmup_epochs}")
        if self.freeze_epochs and not self.init_from:
            raise ConfigError("--freeze-epochs needs --init-from (a random network has nothing "
                              "worth freezing)")
        if self.epochs is not None and self.freeze_epochs > self.epochs:
            raise ConfigError(f"--freeze-epochs {self.freeze_epochs} is larger than --epochs "
                              f"{self.epochs}")
        if self.epochs is not None and self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs} must be smaller than "
                              f"--epochs {self.epochs}")
        if self.class_weight not in ("none", "auto") and not os.path.isfile(self.class_weight):
            raise ConfigError(f"--class-weight must be auto, none or a JSON file of "
                              f"{{class: weight}}; {self.class_weight!r} is none of these")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{"out": "", **{k: v for k, v in d.items() if k in names}})


def lr_at(epoch: int, lr0: float = 1e-3, decay: float = 0.75, step: int = 10) -> float:
    """The paper's step schedule (eq. 15): ``lr0 * decay ** floor(epoch / step)``.

    ``epoch`` counts from 0: epochs 0-9 use lr0, 10-19 use 0.75 lr0, and so on.
    """
    return float(lr0) * float(decay) ** (int(epoch) // int(step))


def cosine_lr_at(epoch: int, lr0: float, epochs: int, warmup: int = 0) -> float:
    """Half a cosine from ``lr0`` (at epoch ``warmup``) towards 0 (after the last epoch)."""
    span = max(1, int(epochs) - int(warmup))
    t = (int(epoch) - int(warmup)) / span
    return float(lr0) * 0.5 * (1.0 + math.cos(math.pi * t))


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (from 0) under ``cfg``'s schedule and warm-up.

    Warm-up ramps linearly: epoch ``e < warmup`` uses ``lr * (e + 1) / (warmup + 1)``, so the
    first full-rate epoch is epoch ``warmup``. The step schedule counts epochs from 0 as in
    the paper; the cosine one starts its descent after the warm-up.
    """
    assert cfg.lr is not None and cfg.epochs is not None, "resolve the config first"
    if epoch < cfg.warmup_epochs:
        return float(cfg.lr) * (epoch + 1) / (cfg.warmup_epochs + 1)
    if cfg.schedule == "cosine":
        return cosine_lr_at(epoch, cfg.lr, cfg.epochs, cfg.warmup_epochs)
    return lr_at(epoch, cfg.lr, cfg.lr_decay, cfg.lr_step)


def describe_schedule(cfg: TrainConfig) -> str:
    """The schedule in words, for config.json and the summary."""
    warm = f"linear warm-up over {cfg.warmup_epochs} epochs, then " if cfg.warmup_epochs else ""
    if cfg.schedule == "cosine":
        return f"{warm}cosine from lr to 0 over the remaining epochs"
    return f"{warm}lr * {cfg.lr_decay} ** floor(epoch / {cfg.lr_step})"
