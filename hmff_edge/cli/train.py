"""`hmff-edge train` and `hmff-edge evaluate`: thin layers over :mod:`hmff_edge.train`."""

from __future__ import annotations

from pathlib import Path

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors, print_json

# CLI parameter -> TrainConfig field, for the options a user can give.
_FIELD = {"no_augment": "augment"}
_NOT_CONFIG = {"out", "resume", "overwrite", "json_out", "quiet", "qat", "qat_epochs"}


def _given(ctx: typer.Context) -> dict[str, object]:
    """The options typed on the command line (or set through the environment), as
    TrainConfig fields; everything else keeps TrainConfig's (or the run's) value."""
    given = {}
    for name, value in ctx.params.items():
        if name in _NOT_CONFIG:
            continue
        # By name: Typer may carry its own copy of click's ParameterSource enum.
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[_FIELD.get(name, name)] = (not value) if name == "no_augment" else value
    return given


@app.command("train")
@handle_errors
def train_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to create (or to --resume)."),
    model: str = typer.Option(None, "--model", "-m",
                              help="Zoo variant (see `hmff-edge models`) or module:function. "
                                   "Default hmff-mobilenet-32ch; hmff-mobilenet-16ch for the "
                                   "digits; the source's with --init-from."),
    data: str = typer.Option(None, "--data", "-d",
                             help="Image folder (one subfolder per class, or train/ + test/), "
                                  "cifar-10-batches-py folder, or 'cifar10' (Keras download). "
                                  "Omitted: the embedded scikit-learn digits."),
    img_size: int = typer.Option(None, "--img-size", help="Input side in pixels (paper 224; "
                                 "digits default 32; the source's with --init-from)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (paper 50; digits default 8)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Global batch (paper 64; digits 32)."),
    lr: float = typer.Option(None, "--lr", help="Initial Adam learning rate (paper 1e-3)."),
    schedule: str = typer.Option("step", "--schedule", help="step: x0.75 every 10 epochs (the "
                                 "paper's); cosine: half a cosine down to 0."),
    warmup_epochs: int = typer.Option(0, "--warmup-epochs", help="Ramp the learning rate up "
                                      "linearly over the first N epochs."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Smooth the one-hot "
                                          "targets by F (e.g. 0.1); 0 = off."),
    ema: bool = typer.Option(False, "--ema", help="Keep a moving average of the weights "
                             "(momentum 0.99); it is what is validated, checkpointed and "
                             "exported."),
    class_weight: str = typer.Option("none", "--class-weight", help="none | auto (inverse class "
                                     "frequency) | FILE (JSON {\"class\": weight}, others 1)."),
    init_from: str = typer.Option(None, "--init-from", help="Start from the weights of a run "
                                  "folder or .keras file (same architecture and input size; a "
                                  "new classifier head when the classes differ)."),
    freeze_epochs: int = typer.Option(0, "--freeze-epochs", help="With --init-from: train only "
                                      "the classifier head for the first N epochs."),
    mixed_precision: bool = typer.Option(False, "--mixed-precision", help="mixed_float16 "
                                         "compute (GPU only)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Write per-epoch scalars to "
                                     "RUN/tensorboard/ (tensorboard --logdir RUN/tensorboard)."),
    val_split: float = typer.Option(0.1, "--val-split", help="Validation share of the training "
                                    "images, stratified, fixed by --seed."),
    test_data: str = typer.Option(None, "--test-data", help="Separate test image folder for "
                                  "metrics.json (else the data's test split, else validation)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Turn off random crop, flip, "
                                    "rotation."),
    train_limit: int = typer.Option(None, "--train-limit", help="Train on a fixed random "
                                    "subset of N training images (bounded CPU runs)."),
    bn_recalibrate: int = typer.Option(50, "--bn-recalibrate", help="Batches used to "
                                       "re-estimate BatchNorm statistics after each epoch "
                                       "(0 = off)."),
    cache_gb: float = typer.Option(4.0, "--cache-gb", help="Hold decoded images in memory up "
                                   "to this many GiB; larger data streams from disk."),
    seed: int = typer.Option(0, "--seed", help="Seed for split, shuffling, init."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its "
                                "last completed epoch (options not given keep the run's values)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete a non-empty --out first."),
    early_stopping: int = typer.Option(None, "--early-stopping", help="Stop after N epochs "
                                       "without a better val_accuracy."),
    strategy: str = typer.Option("default", "--strategy", help="default | mirrored (all local "
                                 "GPUs) | multi-worker (reads TF_CONFIG)."),
    qat: bool = typer.Option(False, "--qat", help="After training, fine-tune the last epochs "
                             "with quantization-aware training into OUT/qat (a run folder whose "
                             "int8 export uses the trained ranges; see `hmff-edge qat`)."),
    qat_epochs: int = typer.Option(2, "--qat-epochs", help="QAT epochs with --qat (1-100)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or epoch lines."),
) -> None:
    """Train a model (the paper's recipe unless told otherwise); write a run folder with the
    model, config.json, MODEL_CARD.md, metrics and plots. With --qat, a QAT run in OUT/qat."""
    from hmff_edge.quant.finetune import QATConfig
    from hmff_edge.train import TrainConfig, fit, format_summary

    given = _given(ctx)
    cfg = TrainConfig(out=str(out), **given)
    cfg.validate()
    qat_cfg = QATConfig(epochs=qat_epochs, progress=not (quiet or json_out)) if qat else None
    if qat_cfg is not None:
        qat_cfg.validate()  # before hours of training
    echo = (lambda s: None) if (quiet or json_out) else (lambda s: typer.echo(s, err=True))
    result = fit(cfg, resume=resume, overwrite=overwrite, explicit=set(given),
                 progress=not (quiet or json_out), echo=echo)
    qat_metrics = None
    if qat_cfg is not None:
        from hmff_edge.quant.finetune import qat_finetune

        qat_metrics = qat_finetune(result.run_dir, Path(result.run_dir) / "qat", qat_cfg)
    if json_out:
        print_json({
            "run_dir": str(result.run_dir), "model": result.config["model"],
            "epochs_done": result.epochs_done, "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy, "eval_split": result.eval_split,
            "metrics": result.metrics, "history": result.history, "data": result.data,
            "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second,
            "optimizer_iterations": result.optimizer_iterations, "params": result.params,
            "init": result.config.get("init"), "qat": qat_metrics,
        })
    elif result.metrics is not None:
        typer.echo(format_summary(result))
    if qat_metrics is not None and not json_out:
        typer.echo(f"QAT run {Path(result.run_dir) / 'qat'}: accuracy {qat_metrics['accuracy']:.4f} "
                   f"(float {qat_metrics['float_accuracy']:.4f}) on the {qat_metrics['split']} "
                   "split")


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    model_or_run: Path = typer.Argument(..., help="Run folder (model.keras + config.json) or "
                                        "a .keras file."),
    data: str = typer.Option(..., "--data", "-d", help="Image folder (or train/+test/, CIFAR "
                             "batches, 'digits'); class names must match the model's labels."),
    split: str = typer.Option(None, "--split", help="train | val | test | all (default: test "
                              "when the data has one, else all)."),
    limit: int = typer.Option(None, "--limit", help="Evaluate a fixed random subset of N images."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Recompute accuracy, precision, recall, F1 per class, the confusion matrix and the most
    confused class pairs of a saved model."""
    from hmff_edge.train import evaluate, format_metrics

    m = evaluate(model_or_run, data, split=split, limit=limit)
    if json_out:
        print_json(m)
    else:
        typer.echo(f"{m['model']} on {m['data']} ({m['split']} split, {m['img_size']} px)")
        typer.echo(format_metrics(m))
