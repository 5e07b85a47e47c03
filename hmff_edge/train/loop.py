"""``fit``: the paper's recipe (plus opt-in options) with a crash-safe run folder.

One ``model.fit`` call per epoch, so that the learning rate, the data order and the
augmentation of epoch ``e`` depend only on ``(seed, e)``: a run resumed from a checkpoint
follows the same schedule as one that never stopped. The steps, in order:
:func:`~hmff_edge.train.plan.plan_run` (cheap checks, nothing written), :func:`open_session`
(strategy, TensorFlow), :func:`restore_or_build` (checkpoint, ``--init-from`` or a fresh
network; before any image is decoded so that a wrong source fails first), data, the run
folder, :func:`_train_epochs`, :func:`~hmff_edge.train.finalize.finalize` (metrics, plots,
model card).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bn import recalibrate_bn
from .config import TrainConfig, epoch_lr
from .data_setup import PreparedData, plan_splits, prepare_data
from .distribute import patch_model_for_multi_worker
from .finalize import finalize, report_streamed_skips
from .initfrom import set_frozen
from .plan import RunPlan, plan_run
from .runfolder import RunFolder
from .session import (
    Session,
    announce_balance,
    compile_for_recipe,
    make_run_config,
    open_run_folder,
    open_session,
    restore_or_build,
    set_batch_geometry,
)


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


@dataclass
class _Progress:
    """The loop's counters; restored from ``state.json`` on resume."""

    history: list[dict[str, Any]]
    start: int = 0
    best_acc: float = -math.inf
    best_epoch: int = 0
    wait: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    seen: int = 0

    @classmethod
    def from_state(cls, run: RunFolder, state: dict[str, Any] | None) -> _Progress:
        if not state:
            return cls(history=[])
        return cls(history=run.read_history()[: state["epochs_done"]],
                   start=int(state["epochs_done"]), best_acc=float(state["best_val_accuracy"]),
                   best_epoch=int(state["best_epoch"]), wait=int(state["wait"]))


def fit(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
        explicit: set[str] | None = None, progress: bool = True,
        echo: Callable[[str], None] = print, initial_model=None,
        on_epoch_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` into the run folder ``cfg.out``.

    ``explicit`` names the options the user gave (a resume refuses to change them).
    ``initial_model`` (a ``keras.Model`` with the run's input size and class count) is
    trained instead of a freshly built network; it is compiled here with the run's
    optimizer and loss (``--init-from`` uses the same path). ``on_epoch_end(epochs_done)``
    is called after each epoch's checkpoint is complete.
    Raises :class:`ConfigError` / :class:`DataError` before touching ``cfg.out`` when the
    options or the data are unusable; a failed new run leaves no folder behind.
    """
    plan = plan_run(cfg, resume=resume, overwrite=overwrite, explicit=explicit)
    created: list[RunFolder] = []
    try:
        return _execute(plan, progress=progress, echo=echo, initial_model=initial_model,
                        on_epoch_end=on_epoch_end, created=created)
    except BaseException:
        for run in created:  # nothing resumable yet: leave nothing half-written
            if not run.state_path.is_file():
                shutil.rmtree(run.root, ignore_errors=True)
        raise


def _execute(plan: RunPlan, *, progress, echo, initial_model, on_epoch_end,
             created: list[RunFolder]) -> TrainResult:
    cfg = plan.cfg
    s = open_session(cfg, progress=progress, echo=echo)
    splits = plan_splits(cfg)
    announce_balance(s, cfg, splits)
    model, origin = restore_or_build(plan, s, splits.labels, initial_model)
    data = prepare_data(cfg, progress=s.show, distributed=s.sinfo.name != "default",
                        splits=splits)
    if data.skipped:
        echo(f"skipped {len(data.skipped)} unreadable image files (first: "
             f"{data.skipped[0][0]}: {data.skipped[0][1]})")
    run, state = open_run_folder(plan, s, created)
    rc = make_run_config(cfg, data, origin, s)
    rc.save(run.root)
    run.write_labels(data.labels)
    set_batch_geometry(s, cfg, data)
    if s.multi:
        x0 = s.tf.zeros((1, cfg.img_size, cfg.img_size, 3), s.tf.float32)
        patch_model_for_multi_worker(model, (x0, s.tf.zeros((1,), s.tf.int32)))
    prog = _Progress.from_state(run, state)
    if prog.start:
        echo(f"resuming {run.root} after epoch {prog.start}/{cfg.epochs} "
             f"(optimizer step {int(model.optimizer.iterations.numpy())})")
    if cfg.tensorboard and s.sinfo.is_chief:
        s.writer = s.tf.summary.create_file_writer(str(run.root / "tensorboard"))
    _train_epochs(s, cfg, run, model, data, prog, on_epoch_end)

    iterations = int(model.optimizer.iterations.numpy())
    metrics, split = None, "test" if data.test is not None else "validation"
    if s.sinfo.is_chief:
        metrics = finalize(run, rc, data, prog.history, split, s.keras)
    else:
        shutil.rmtree(run.root, ignore_errors=True)  # the scratch copy of a non-chief worker
    report_streamed_skips(data, echo)
    return TrainResult(
        run_dir=run.root, config=rc.to_dict(), history=prog.history, metrics=metrics,
        eval_split=split, best_epoch=prog.best_epoch, best_val_accuracy=prog.best_acc,
        epochs_done=len(prog.history), stopped_early=prog.stopped_early,
        resumed_from=prog.start, train_seconds=prog.train_seconds,
        images_per_second=(prog.seen / prog.train_seconds) if prog.train_seconds else 0.0,
        optimizer_iterations=iterations, params=int(model.count_params()),
        data={"kind": data.source.kind, "spec": data.source.spec, "mode": data.mode,
              **data.counts, "skipped": len(data.skipped), "classes": len(data.labels)},
    )


# -- the epochs ----------------------------------------------------------------------------
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


def _datasets(s: Session, cfg: TrainConfig, data: PreparedData, epoch: int, *,
              seed: int, augment: bool):
    ds = data.train.train_dataset(batch_size=s.batch, epoch=epoch, seed=seed, augment=augment,
                                  mean=cfg.mean, std=cfg.std, drop_remainder=s.drop)
    if s.multi:
        from hmff_edge.data.pipeline import distribute_options

        ds = distribute_options(ds)
    return ds


def _val_dataset(s: Session, cfg: TrainConfig, data: PreparedData):
    ds = data.val.eval_dataset(batch_size=s.batch, mean=cfg.mean, std=cfg.std)
    if s.multi:
        from hmff_edge.data.pipeline import distribute_options

        ds = distribute_options(ds)
    return ds


def _train_epochs(s: Session, cfg: TrainConfig, run: RunFolder, model, data: PreparedData,
                  prog: _Progress, on_epoch_end) -> None:
    val_ds = _val_dataset(s, cfg, data)
    epoch = prog.start
    try:
        for epoch in range(prog.start, cfg.epochs):
            row, improved, dt = _one_epoch(s, cfg, run, model, data, val_ds, prog, epoch)
            if s.show:
                s.echo(f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {row['loss']:.4f}  "
                       f"acc {row['accuracy']:.4f}  val_loss {row['val_loss']:.4f}  "
                       f"val_acc {row['val_accuracy']:.4f}  lr {row['lr']:.3g}  {dt:.1f}s"
                       + ("  *best" if improved else "")
                       + ("  (head only)" if epoch < cfg.freeze_epochs else ""))
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
            if cfg.early_stopping and prog.wait >= cfg.early_stopping:
                prog.stopped_early = True
                s.echo(f"early stopping: val_accuracy has not improved for {prog.wait} epochs "
                       f"(best {prog.best_acc:.4f} at epoch {prog.best_epoch})")
                break
    except KeyboardInterrupt:
        s.echo(f"\ninterrupted during epoch {epoch + 1}; {len(prog.history)} completed epochs "
               f"are saved. Continue with: hmff-edge train --out {cfg.out} --resume")
        raise


def _one_epoch(s: Session, cfg: TrainConfig, run: RunFolder, model, data: PreparedData,
               val_ds, prog: _Progress, epoch: int) -> tuple[dict[str, Any], bool, float]:
    frozen = epoch < cfg.freeze_epochs
    if cfg.init_from and set_frozen(model, frozen):
        compile_for_recipe(model, cfg, s.keras, optimizer=model.optimizer)  # new trainable set
    lr = epoch_lr(cfg, epoch)
    model.optimizer.learning_rate.assign(lr)
    # Precise BN runs eagerly in the default strategy only (under tf.distribute each worker
    # would assign its own statistics to mirrored variables), and not while the body is
    # frozen (its BN layers then keep the source's statistics).
    recal = bool(cfg.bn_recalibrate) and s.sinfo.name == "default" and not frozen
    separate_val = recal or cfg.ema
    bar = _progress_callback(s.keras, s.steps, f"epoch {epoch + 1}/{cfg.epochs}", s.show)
    t0 = time.perf_counter()
    h = model.fit(_datasets(s, cfg, data, epoch, seed=cfg.seed, augment=cfg.augment),
                  epochs=epoch + 1, initial_epoch=epoch,
                  validation_data=None if separate_val else val_ds, shuffle=False, verbose=0,
                  callbacks=[bar], class_weight=s.class_weight)
    dt = time.perf_counter() - t0
    prog.train_seconds += dt
    prog.seen += s.steps * s.batch if s.drop else data.train.n
    logs = {k: float(v[-1]) for k, v in h.history.items()}
    with _evaluation_weights(model, cfg) as raw:
        if recal:
            # Evaluation-mode statistics for validation, best-model choice and export.
            recalibrate_bn(model, _datasets(s, cfg, data, epoch, seed=cfg.seed + 1,
                                            augment=False), cfg.bn_recalibrate)
        if separate_val:
            val = model.evaluate(val_ds, verbose=0, return_dict=True)
            logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
        row = {"epoch": epoch + 1, "loss": logs["loss"], "accuracy": logs["accuracy"],
               "val_loss": logs["val_loss"], "val_accuracy": logs["val_accuracy"], "lr": lr}
        improved = _record_epoch(prog, row)
        _save_checkpoint(run, model, prog, epoch, improved, lr, raw)
    if s.writer is not None:
        _log_scalars(s, row)
    return row, improved, dt


@contextlib.contextmanager
def _evaluation_weights(model, cfg: TrainConfig):
    """With ``--ema`` the average weights (yields the raw ones), else the weights as they are."""
    if not cfg.ema:
        yield None
        return
    from .ema import average_weights_applied

    with average_weights_applied(model.optimizer) as raw:
        yield raw


def _record_epoch(prog: _Progress, row: dict[str, Any]) -> bool:
    prog.history.append(row)
    improved = row["val_accuracy"] > prog.best_acc
    if improved:
        prog.best_acc, prog.best_epoch, prog.wait = row["val_accuracy"], row["epoch"], 0
    else:
        prog.wait += 1
    return improved


@contextlib.contextmanager
def _all_trainable(model):
    """Save with every layer trainable, so that a checkpoint or export loads with its
    optimizer complete whether or not the body is frozen at this epoch."""
    flags = [(layer, layer.trainable) for layer in model.layers]
    for layer, _ in flags:
        layer.trainable = True
    try:
        yield
    finally:
        for layer, was in flags:
            layer.trainable = was


def _save_checkpoint(run: RunFolder, model, prog: _Progress, epoch: int, improved: bool,
                     lr: float, raw) -> None:
    """Checkpoint (and raw EMA-less weights), best model, history, then ``state.json``."""
    ckpt = run.checkpoint_path(epoch + 1)
    with _all_trainable(model):
        run.save_keras(model, ckpt)
    if raw is not None:
        from .ema import save_raw

        save_raw(ckpt, raw)
    if improved:  # the same bytes: a copy instead of a second save (~0.6 s here)
        run.copy_file(ckpt, run.model_path)
    run.write_history(prog.history)
    run.write_state({"epochs_done": epoch + 1, "checkpoint": str(ckpt.relative_to(run.root)),
                     "best_epoch": prog.best_epoch, "best_val_accuracy": prog.best_acc,
                     "wait": prog.wait,
                     "optimizer_iterations": int(model.optimizer.iterations.numpy()), "lr": lr})
    run.prune_checkpoints()


def _log_scalars(s: Session, row: dict[str, Any]) -> None:
    """Per-epoch scalars in TensorBoard's format. ``tf.summary.write`` with the scalars
    plugin's metadata is what ``tf.summary.scalar`` writes, without needing the tensorboard
    package at training time (only to view the logs)."""
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    with s.writer.as_default():
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            s.tf.summary.write(key, s.tf.constant(float(row[key]), s.tf.float32),
                               step=row["epoch"], metadata=meta.SerializeToString())
    s.writer.flush()


