"""``fit``: the paper's recipe with a crash-safe run folder.

One ``model.fit`` call per epoch, so that the learning rate, the data order and the
augmentation of epoch ``e`` depend only on ``(seed, e)``: a run resumed from a checkpoint
follows the same schedule as one that never stopped.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge.errors import ConfigError

from .bn import recalibrate_bn
from .config import IDENTITY_FIELDS, TrainConfig, lr_at
from .data_setup import PreparedData, prepare_data
from .distribute import StrategyInfo, make_strategy, patch_model_for_multi_worker
from .metrics import compute_metrics
from .modelfactory import build, register_custom_objects
from .optim import prepare_adam
from .plots import plot_confusion, plot_curves
from .runfolder import RunFolder

# Test hook: SIGKILL this process right after the checkpoint of epoch N is complete, to
# exercise --resume with a real kill at a known point.
KILL_ENV = "HMFF_EDGE_KILL_AFTER_EPOCH"


@dataclass
class TrainResult:
    run_dir: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    eval_split: str
    best_epoch: int
    best_val_accuracy: float
    epochs_done: int
    stopped_early: bool
    resumed_from: int
    train_seconds: float
    images_per_second: float
    optimizer_iterations: int
    params: int
    data: dict[str, Any] = field(default_factory=dict)


def _merge_for_resume(run: RunFolder, cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    if not run.config_path.is_file():
        raise ConfigError(f"nothing to resume in {str(run.root)!r}: it has no config.json")
    saved = TrainConfig.from_dict(run.read_json(run.config_path)["train"])
    given = cfg.resolved()  # same path normalization as the saved config
    clash = [f"{k} (run: {getattr(saved, k)!r}, given: {getattr(given, k)!r})"
             for k in IDENTITY_FIELDS if k in explicit and getattr(given, k) != getattr(saved, k)]
    if clash:
        raise ConfigError("--resume cannot change " + "; ".join(clash)
                          + ". Start a new run with --overwrite or another --out")
    # What may change on resume: how long to train, the stop rule, where it runs.
    for k in ("epochs", "early_stopping", "strategy", "cache_gb", "bn_recalibrate"):
        if k in explicit:
            setattr(saved, k, getattr(cfg, k))
    saved.out = str(run.root)
    saved.validate()
    return saved


def _progress_callback(keras, steps: int | None, desc: str, enabled: bool):
    class _Bar(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=desc, unit="step", leave=False,
                            disable=not enabled, dynamic_ncols=True)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and batch % 5 == 0:
                self.bar.set_postfix(loss=f"{float(logs.get('loss', 0)):.3f}",
                                     acc=f"{float(logs.get('accuracy', 0)):.3f}")

        def on_epoch_end(self, epoch, logs=None):
            self.bar.close()

    return _Bar()


def _config_record(cfg: TrainConfig, data: PreparedData) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    rec = dict(cfg.to_dict())
    rec.update({
        "num_classes": len(data.labels), "labels": data.labels,
        "data_kind": data.source.kind, "data_mode": data.mode, "counts": data.counts,
        "skipped_files": len(data.skipped),
        "skipped_examples": [f"{p}: {r}" for p, r in data.skipped[:20]],
        "lr_schedule": f"lr * {cfg.lr_decay} ** floor(epoch / {cfg.lr_step})",
        "optimizer": "adam", "loss": "sparse_categorical_crossentropy",
        "augmentation": "random crop (shift <= 1/8 side, reflect), horizontal flip, "
                        "rotation <= 10 deg" if cfg.augment else "none",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "train": cfg.to_dict(),
    })
    return rec


def _predict(model, ds) -> tuple[np.ndarray, np.ndarray]:
    ys, ps = [], []
    for x, y in ds:
        ps.append(np.argmax(np.asarray(model.predict_on_batch(x)), axis=-1))
        ys.append(np.asarray(y))
    if not ys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ys).astype(np.int64), np.concatenate(ps).astype(np.int64)


def fit(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
        explicit: set[str] | None = None, progress: bool = True,
        echo: Callable[[str], None] = print) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` into the run folder ``cfg.out``.

    ``explicit`` names the options the user gave (a resume refuses to change them).
    Raises :class:`ConfigError` / :class:`DataError` before touching ``cfg.out`` when the
    options or the data are unusable.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    explicit = set(explicit if explicit is not None else cfg.to_dict())
    run = RunFolder(cfg.out)
    state = None
    if resume:
        cfg = _merge_for_resume(run, cfg, explicit)
        state = run.read_state()
        if state is None:
            raise ConfigError(f"nothing to resume in {str(run.root)!r}: no epoch completed "
                              "yet; start again with --overwrite")
    else:
        cfg = cfg.resolved()
        run.check_new(overwrite=overwrite)

    sinfo: StrategyInfo = make_strategy(cfg.strategy)  # before any other TF op
    from hmff_edge._lazy import keras as _keras

    keras = _keras()
    import tensorflow as tf

    multi = sinfo.name == "multi-worker"
    show = progress and sinfo.is_chief
    data = prepare_data(cfg, progress=show, distributed=sinfo.name != "default")
    if data.skipped:
        echo(f"skipped {len(data.skipped)} unreadable image files (first: "
             f"{data.skipped[0][0]}: {data.skipped[0][1]})")

    # Non-chief workers write their (identical) files to a scratch folder.
    if not sinfo.is_chief:
        scratch = tempfile.mkdtemp(prefix=f"hmff-worker{sinfo.worker_index}-")
        if resume:
            # Read the chief's checkpoint (a shared file system), write elsewhere.
            src_ckpt = run.root / state["checkpoint"]
            run = RunFolder(scratch)
            run.ckpt_dir.mkdir(parents=True, exist_ok=True)
            state = dict(state, checkpoint=str(src_ckpt))
        else:
            run = RunFolder(scratch)
    if not resume:
        run.create(overwrite=overwrite)
    record = _config_record(cfg, data)
    run.write_json(run.config_path, record)
    run.write_labels(data.labels)

    keras.utils.set_random_seed(cfg.seed)
    register_custom_objects()
    with sinfo.strategy.scope():
        if state is not None:
            ckpt = Path(state["checkpoint"])
            model = keras.models.load_model(ckpt if ckpt.is_absolute() else run.root / ckpt)
        else:
            model = build(cfg.model, img_size=cfg.img_size, num_classes=len(data.labels),
                          dropout=cfg.dropout)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        prepare_adam(model)
    if multi:
        x0 = tf.zeros((1, cfg.img_size, cfg.img_size, 3), tf.float32)
        patch_model_for_multi_worker(model, (x0, tf.zeros((1,), tf.int32)))

    history = run.read_history()[: state["epochs_done"]] if state else []
    start = int(state["epochs_done"]) if state else 0
    best_acc = float(state["best_val_accuracy"]) if state else -math.inf
    best_epoch = int(state["best_epoch"]) if state else 0
    wait = int(state["wait"]) if state else 0
    if start:
        echo(f"resuming {run.root} after epoch {start}/{cfg.epochs} "
             f"(optimizer step {int(model.optimizer.iterations.numpy())})")

    batch = cfg.batch_size
    drop = multi  # equal step counts on every worker
    if drop:
        batch = max(sinfo.num_replicas, min(batch, data.train.n))
    steps = (data.train.n // batch) if drop else math.ceil(data.train.n / batch)
    val_ds = data.val.eval_dataset(batch_size=batch, mean=cfg.mean, std=cfg.std)
    if multi:
        from hmff_edge.data.pipeline import distribute_options

        val_ds = distribute_options(val_ds)
    # Precise BN runs eagerly in the default strategy only (under tf.distribute each worker
    # would assign its own statistics to mirrored variables).
    recal = bool(cfg.bn_recalibrate) and sinfo.name == "default"
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    stopped_early = False
    train_seconds = 0.0
    seen = 0
    epoch = start
    try:
        for epoch in range(start, cfg.epochs):
            lr = lr_at(epoch, cfg.lr, cfg.lr_decay, cfg.lr_step)
            model.optimizer.learning_rate.assign(lr)
            ds = data.train.train_dataset(batch_size=batch, epoch=epoch, seed=cfg.seed,
                                          augment=cfg.augment, mean=cfg.mean, std=cfg.std,
                                          drop_remainder=drop)
            if multi:
                from hmff_edge.data.pipeline import distribute_options

                ds = distribute_options(ds)
            bar = _progress_callback(keras, steps, f"epoch {epoch + 1}/{cfg.epochs}", show)
            t0 = time.perf_counter()
            h = model.fit(ds, epochs=epoch + 1, initial_epoch=epoch,
                          validation_data=None if recal else val_ds, shuffle=False,
                          verbose=0, callbacks=[bar])
            dt = time.perf_counter() - t0
            train_seconds += dt
            if recal:
                # Evaluation-mode statistics for validation, best-model choice and export.
                recalibrate_bn(model, data.train.train_dataset(
                    batch_size=batch, epoch=epoch, seed=cfg.seed + 1, augment=False,
                    mean=cfg.mean, std=cfg.std), cfg.bn_recalibrate)
                val = model.evaluate(val_ds, verbose=0, return_dict=True)
                h.history["val_loss"], h.history["val_accuracy"] = [val["loss"]], [val["accuracy"]]
            seen += steps * batch if drop else data.train.n
            logs = {k: float(v[-1]) for k, v in h.history.items()}
            row = {"epoch": epoch + 1, "loss": logs["loss"], "accuracy": logs["accuracy"],
                   "val_loss": logs["val_loss"], "val_accuracy": logs["val_accuracy"], "lr": lr}
            history.append(row)
            improved = row["val_accuracy"] > best_acc
            if improved:
                best_acc, best_epoch, wait = row["val_accuracy"], epoch + 1, 0
            else:
                wait += 1
            ckpt = run.checkpoint_path(epoch + 1)
            run.save_keras(model, ckpt)
            if improved:  # the same bytes: a copy instead of a second save (~0.6 s here)
                run.copy_file(ckpt, run.model_path)
            run.write_history(history)
            iters = int(model.optimizer.iterations.numpy())
            run.write_state({"epochs_done": epoch + 1, "checkpoint": str(ckpt.relative_to(run.root)),
                             "best_epoch": best_epoch, "best_val_accuracy": best_acc,
                             "wait": wait, "optimizer_iterations": iters, "lr": lr})
            run.prune_checkpoints()
            if show:
                echo(f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['loss']:.4f}  "
                     f"acc {row['accuracy']:.4f}  val_loss {row['val_loss']:.4f}  "
                     f"val_acc {row['val_accuracy']:.4f}  lr {lr:.3g}  {dt:.1f}s"
                     + ("  *best" if improved else ""))
            if kill_after and epoch + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if cfg.early_stopping and wait >= cfg.early_stopping:
                stopped_early = True
                echo(f"early stopping: val_accuracy has not improved for {wait} epochs "
                     f"(best {best_acc:.4f} at epoch {best_epoch})")
                break
    except KeyboardInterrupt:
        done = len(history)
        echo(f"\ninterrupted during epoch {epoch + 1}; {done} completed epochs are saved. "
             f"Continue with: hmff-edge train --out {cfg.out} --resume")
        raise

    iterations = int(model.optimizer.iterations.numpy())
    metrics, split = None, "test" if data.test is not None else "validation"
    if sinfo.is_chief:
        metrics = _finalize(run, cfg, data, history, split, keras)
    else:
        shutil.rmtree(run.root, ignore_errors=True)  # the scratch copy of a non-chief worker
    if data.mode == "streaming":
        # Streamed files are decoded (and found unreadable) during the epochs.
        seen_bad: dict[str, str] = {}
        for part in (data.train, data.val, data.test):
            seen_bad.update(getattr(part, "skipped", {}) or {})
        data.skipped = sorted(seen_bad.items())
        if data.skipped:
            echo(f"skipped {len(data.skipped)} unreadable image files while streaming "
                 f"(first: {data.skipped[0][0]}: {data.skipped[0][1]})")
    return TrainResult(
        run_dir=run.root, config=record, history=history, metrics=metrics, eval_split=split,
        best_epoch=best_epoch, best_val_accuracy=best_acc, epochs_done=len(history),
        stopped_early=stopped_early, resumed_from=start, train_seconds=train_seconds,
        images_per_second=(seen / train_seconds) if train_seconds else 0.0,
        optimizer_iterations=iterations, params=int(model.count_params()),
        data={"kind": data.source.kind, "spec": data.source.spec, "mode": data.mode,
              **data.counts, "skipped": len(data.skipped), "classes": len(data.labels)},
    )


def _finalize(run: RunFolder, cfg: TrainConfig, data: PreparedData, history, split, keras):
    """Metrics of the best model on the test (or validation) split, plots."""
    best = keras.models.load_model(run.model_path)
    ds = (data.test if data.test is not None else data.val).eval_dataset(
        batch_size=max(cfg.batch_size, 64), mean=cfg.mean, std=cfg.std)
    y_true, y_pred = _predict(best, ds)
    metrics = compute_metrics(y_true, y_pred, data.labels)
    best_row = max(history, key=lambda r: r["val_accuracy"]) if history else {}
    metrics.update({"split": split, "model": cfg.model, "img_size": cfg.img_size,
                    "best_epoch": best_row.get("epoch"), "data": data.source.spec})
    run.write_json(run.metrics_path, metrics)
    if history:
        plot_curves(history, run.plots_dir)
    plot_confusion(metrics["confusion_matrix"], data.labels, run.plots_dir / "confusion_matrix.png",
                   title=f"{cfg.model} on the {split} split (accuracy {metrics['accuracy']:.3f})")
    return metrics
