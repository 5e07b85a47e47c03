"""QAT fine-tuning of a trained run: ``qat_finetune(run, out, QATConfig)`` -> a new run folder.

The float model is rebuilt as its QAT twin (:func:`~hmff_edge.quant.transform.quantize_model`),
its activation ranges are calibrated on training images, and it is fine-tuned on the run's
own training split through the run's own data pipeline (same split, augmentation and
normalization as ``hmff-edge train``). The loss mixes the labels with the float model's
probabilities (self-distillation, weight ``distill``): the int8 model learns to make the
float model's decisions, which is what the export gate measures, not just any decisions of
the same accuracy.

The result is a normal run folder (``model.keras`` that loads and evaluates with
``hmff_edge.models.load_model``, ``config.json`` with a ``qat`` record, ``labels.txt``,
``history.csv``, ``metrics.json``), written in a staging folder and moved into place at the
end: a failed or interrupted fine-tune leaves nothing under ``out``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge.errors import ConfigError, DataError
from hmff_edge.metadata import current_umask

MAX_EPOCHS = 100


@dataclass
class QATConfig:
    """How to fine-tune. ``data`` replaces the run's training data (same classes)."""

    epochs: int = 2
    lr: float = 1e-4  # Adam, cosine-decayed to 0 over the fine-tune
    batch_size: int | None = None  # None: the run's
    distill: float = 0.5  # weight of the float model's probabilities in the loss
    calib_batches: int = 8  # batches that set the initial activation ranges
    data: str | None = None
    max_images: int | None = None  # fine-tune on a fixed subset of the run's training split
    momentum: float = 0.99  # of the activation ranges' moving averages
    progress: bool = True

    def validate(self) -> None:
        """Refuse impossible values before any work (the CLI's flags map onto these)."""
        if not isinstance(self.epochs, int) or not 1 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"--qat-epochs must be an integer from 1 to {MAX_EPOCHS}, "
                              f"got {self.epochs!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size!r}")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"--distill must be between 0 and 1, got {self.distill!r}")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"--qat-images must be at least 1, got {self.max_images!r}")
        if self.calib_batches < 1:
            raise ConfigError(f"calib_batches must be at least 1, got {self.calib_batches!r}")


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a run folder; :class:`ConfigError` naming what is missing."""
    run = Path(run_dir)
    cfg_path = run / "config.json"
    if not (run / "model.keras").is_file() or not cfg_path.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run folder (it needs model.keras and "
                          "config.json, as `hmff-edge train` writes them)")
    return json.loads(cfg_path.read_text())


_BUILTIN_DATA = ("digits", "cifar10-keras")


def check_data_reachable(config: dict[str, Any], data: str | None) -> str:
    """The data spec QAT will read: ``data`` or the run's; refuse a folder that is gone."""
    spec = data if data is not None else config.get("data")
    flag = "pass --data DIR (a folder with the same classes)"
    if spec is None:
        raise ConfigError(f"the run's config.json names no training data: {flag}")
    if str(spec) not in _BUILTIN_DATA and not Path(str(spec)).exists():
        whose = "--data" if data is not None else "the run's training data"
        raise ConfigError(f"{whose} {str(spec)!r} does not exist; {flag}")
    return str(spec)


def check_out(out: str | os.PathLike) -> Path:
    p = Path(out)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise ConfigError(f"--out {str(out)!r} exists and is not empty; choose a new folder")
    return p


def qat_finetune(run_dir: str | os.PathLike, out: str | os.PathLike,
                 cfg: QATConfig | None = None) -> dict[str, Any]:
    """Fine-tune run ``run_dir`` with quantization-aware training into run folder ``out``.

    Returns the metrics written to ``out/metrics.json`` (QAT and float accuracy on the run's
    held-out split, seconds). Raises :class:`ConfigError` for bad options, a run whose data
    is gone, or a model with layers QAT does not support, all before any data is read.
    """
    cfg = cfg or QATConfig()
    cfg.validate()
    config = read_run_config(run_dir)
    spec = check_data_reachable(config, cfg.data)
    out_path = check_out(out)
    from hmff_edge.models import load_model
    from hmff_edge.quant.transform import check_supported, snap_biases

    model = load_model(Path(run_dir) / "model.keras", compile=False)
    check_supported(model)
    t0 = time.perf_counter()
    data = _prepare(config, spec, cfg)
    stage = Path(tempfile.mkdtemp(prefix=".qat-", dir=out_path.parent if out_path.parent.exists()
                                  else None))
    stage.chmod(0o777 & ~current_umask())  # it becomes the run folder: not mkdtemp's 0700
    try:
        qmodel, history = _train(model, data, config, cfg)
        snap_biases(qmodel)  # the int32 biases the int8 file will hold
        metrics = _evaluate(model, qmodel, data, config)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        _write_run(stage, out_path, qmodel, config, cfg, run_dir, spec, history, metrics,
                   data.labels)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if out_path.exists():
            out_path.rmdir()  # checked empty above
        os.replace(stage, out_path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return metrics


def _train_config(config: dict[str, Any], spec: str, max_images: int | None):
    from hmff_edge.train.config import TrainConfig

    limit = config.get("train_limit")
    if max_images is not None:
        limit = max_images if limit is None else min(int(limit), max_images)
    return TrainConfig.from_dict({**config, "data": spec, "out": config.get("out") or "",
                                  "train_limit": limit})


def _prepare(config: dict[str, Any], spec: str, cfg: QATConfig):
    from hmff_edge.train.data_setup import prepare_data

    data = prepare_data(_train_config(config, spec, cfg.max_images), progress=cfg.progress)
    if list(data.labels) != list(config.get("labels", data.labels)):
        raise DataError(f"data {spec!r} has classes {data.labels}; the run was trained on "
                        f"{config.get('labels')}")
    return data


def _calibration_batches(data, config, batch_size: int, n: int):
    ds = data.train.eval_dataset(batch_size=batch_size, mean=config["mean"], std=config["std"])
    for i, (x, _) in enumerate(ds):
        if i >= n:
            break
        yield x


def _train(model, data, config: dict[str, Any], cfg: QATConfig):
    from hmff_edge._lazy import keras as _keras
    from hmff_edge.quant.fakequant import input_range, observe_ranges
    from hmff_edge.quant.transform import quantize_model

    keras = _keras()
    import tensorflow as tf

    batch = cfg.batch_size or int(config.get("batch_size") or 64)
    qmodel = quantize_model(model, momentum=cfg.momentum,
                            input_range=input_range(config["mean"], config["std"]))
    observe_ranges(qmodel, _calibration_batches(data, config, batch, cfg.calib_batches))
    steps_per_epoch = max(1, math.ceil(data.train.n / batch))
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, cfg.epochs * steps_per_epoch)
    opt = keras.optimizers.Adam(schedule)
    alpha = float(cfg.distill)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        teacher = model(x, training=False)
        with tf.GradientTape() as tape:
            p = qmodel(x, training=True)
            hard = keras.losses.sparse_categorical_crossentropy(y, p)
            soft = keras.losses.categorical_crossentropy(teacher, p)
            loss = tf.reduce_mean((1.0 - alpha) * hard + alpha * soft)
        grads = tape.gradient(loss, qmodel.trainable_variables)
        opt.apply_gradients(zip(grads, qmodel.trainable_variables))
        acc = tf.reduce_mean(tf.cast(tf.argmax(p, 1, output_type=tf.int32) == tf.cast(y, tf.int32),
                                     tf.float32))
        return loss, acc

    from tqdm import tqdm

    history = []
    for epoch in range(cfg.epochs):
        ds = data.train.train_dataset(batch_size=batch, epoch=epoch,
                                      seed=int(config.get("seed", 0)),
                                      augment=bool(config.get("augment", True)),
                                      mean=config["mean"], std=config["std"])
        losses, accs = [], []
        bar = tqdm(ds, total=steps_per_epoch, desc=f"qat {epoch + 1}/{cfg.epochs}",
                   unit="step", disable=not cfg.progress, leave=False)
        for x, y in bar:
            loss, acc = step(x, y)
            losses.append(float(loss))
            accs.append(float(acc))
            if len(losses) % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", acc=f"{np.mean(accs[-10:]):.3f}")
        val_acc = _accuracy(qmodel, data.val, config)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                        "accuracy": float(np.mean(accs)), "val_accuracy": val_acc})
    return qmodel, history


def _predict(model, split_data, config) -> tuple[np.ndarray, np.ndarray]:
    from hmff_edge.quant.transform import reference_model

    model, dtype = reference_model(model)  # a QAT model as its int8 file computes it
    ds = split_data.eval_dataset(batch_size=128, mean=config["mean"], std=config["std"])
    ys, ps = [], []
    for x, y in ds:
        ps.append(np.asarray(model(np.asarray(x, dtype), training=False)).argmax(1))
        ys.append(np.asarray(y))
    return np.concatenate(ys), np.concatenate(ps)


def _accuracy(model, split_data, config) -> float:
    y, p = _predict(model, split_data, config)
    return float((y == p).mean())


def _evaluate(model, qmodel, data, config) -> dict[str, Any]:
    from hmff_edge.train.metrics import compute_metrics

    held_out = data.test if data.test is not None else data.val
    y, p_qat = _predict(qmodel, held_out, config)
    _, p_float = _predict(model, held_out, config)
    metrics = compute_metrics(y, p_qat, data.labels)
    metrics.update({
        "split": "test" if data.test is not None else "val",
        "float_accuracy": float((p_float == y).mean()),
        "qat_float_agreement": float((p_float == p_qat).mean()),
        "model": config.get("model"), "img_size": config.get("img_size"),
    })
    metrics["accuracy_cost_points"] = round(100 * (metrics["float_accuracy"] - metrics["accuracy"]),
                                            2)
    return metrics


def _write_run(stage: Path, out_path: Path, qmodel, config, cfg: QATConfig, run_dir, spec, history, metrics,
               labels) -> None:
    qmodel.save(stage / "model.keras")
    record = {**config, "out": str(out_path), "data": spec,
              "qat": {**asdict(cfg), "source_run": str(Path(run_dir).resolve()),
                      "float_accuracy": metrics["float_accuracy"]}}
    record["qat"].pop("progress", None)
    (stage / "config.json").write_text(json.dumps(record, indent=2))
    (stage / "labels.txt").write_text("\n".join(labels) + "\n")
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(stage / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
