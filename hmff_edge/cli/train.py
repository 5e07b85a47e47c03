"""`hmff-edge train` and `hmff-edge evaluate`: thin layers over :mod:`hmff_edge.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command, print_json
from hmff_edge.cli._options import Opt, given_fields, json_flag

# Rows with a field are TrainConfig fields; only those the command line (or the environment)
# gives are passed, so the others keep TrainConfig's (or the resumed run's) value.
_OPTIONS = (
    Opt("--out -o", Path, ..., "Run folder to create (or to --resume).", field=None),
    Opt("--model -m", str, None, "Zoo variant (see `hmff-edge models`) or module:function. Default "
        "hmff-mobilenet-32ch; hmff-mobilenet-16ch for the digits; the source's with --init-from."),
    Opt("--data -d", str, None, "Image folder (one subfolder per class, or train/ + test/), "
        "cifar-10-batches-py folder, or 'cifar10' (Keras download). Omitted: the embedded scikit-learn "
        "digits."),
    Opt("--img-size", int, None, "Input side in pixels (paper 224; digits default 32; the source's with "
        "--init-from)."),
    Opt("--epochs", int, None, "Epochs (paper 50; digits default 8)."),
    Opt("--batch-size", int, None, "Global batch (paper 64; digits 32)."),
    Opt("--lr", float, None, "Initial Adam learning rate (paper 1e-3)."),
    Opt("--schedule", str, "step", "step: x0.75 every 10 epochs (the paper's); cosine: half a cosine down to "
        "0."),
    Opt("--warmup-epochs", int, 0, "Ramp the learning rate up linearly over the first N epochs."),
    Opt("--label-smoothing", float, 0.0, "Smooth the one-hot targets by F (e.g. 0.1); 0 = off."),
    Opt("--ema", bool, False, "Keep a moving average of the weights (momentum 0.99); it is what is "
        "validated, checkpointed and exported."),
    Opt("--class-weight", str, "none", "none | auto (inverse class frequency) | FILE (JSON {\"class\": "
        "weight}, others 1)."),
    Opt("--init-from", str, None, "Start from the weights of a run folder or .keras file (same architecture "
        "and input size; a new classifier head when the classes differ)."),
    Opt("--freeze-epochs", int, 0, "With --init-from: train only the classifier head for the first N "
        "epochs."),
    Opt("--mixed-precision", bool, False, "mixed_float16 compute (GPU only)."),
    Opt("--tensorboard", bool, False, "Write per-epoch scalars to RUN/tensorboard/ (tensorboard --logdir "
        "RUN/tensorboard)."),
    Opt("--val-split", float, 0.1, "Validation share of the training images, stratified, fixed by --seed."),
    Opt("--test-data", str, None, "Separate test image folder for metrics.json (else the data's test split, "
        "else validation)."),
    Opt("--no-augment", bool, False, "Turn off random crop, flip, rotation.", field="augment"),
    Opt("--train-limit", int, None, "Train on a fixed random subset of N training images (bounded CPU "
        "runs)."),
    Opt("--bn-recalibrate", int, 50, "Batches used to re-estimate BatchNorm statistics after each epoch (0 = "
        "off)."),
    Opt("--cache-gb", float, 4.0, "Hold decoded images in memory up to this many GiB; larger data streams "
        "from disk."),
    Opt("--seed", int, 0, "Seed for split, shuffling, init."),
    Opt("--resume", bool, False, "Continue the run in --out from its last completed epoch (options not given "
        "keep the run's values).", field=None),
    Opt("--overwrite", bool, False, "Delete a non-empty --out first.", field=None),
    Opt("--early-stopping", int, None, "Stop after N epochs without a better val_accuracy."),
    Opt("--strategy", str, "default", "default | mirrored (all local GPUs) | multi-worker (reads "
        "TF_CONFIG)."),
    Opt("--qat", bool, False, "After training, fine-tune the last epochs with quantization-aware training "
        "into OUT/qat (a run folder whose int8 export uses the trained ranges; see `hmff-edge qat`).",
        field=None),
    Opt("--qat-epochs", int, 2, "QAT epochs with --qat (1-100).", field=None),
    json_flag("Print the result as JSON."),
    Opt("--quiet -q", bool, False, "No progress bars or epoch lines.", field=None),
)


def _given(ctx: typer.Context) -> dict[str, object]:
    """The TrainConfig fields the command line gives (``fit`` names them as explicit)."""
    given = given_fields(ctx, _OPTIONS)
    if "augment" in given:  # the flag is --no-augment
        given["augment"] = not given["augment"]
    return given


@command(app, "train", _OPTIONS)
def train_cmd(ctx: typer.Context, out: Path, resume: bool, overwrite: bool, qat: bool,
              qat_epochs: int, json_out: bool, quiet: bool, **_config: object) -> None:
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


_EVALUATE_OPTIONS = (
    Opt("--data -d", str, ..., "Image folder (or train/+test/, CIFAR batches, 'digits'); class names must "
        "match the model's labels."),
    Opt("--split", str, None, "train | val | test | all (default: test when the data has one, else all)."),
    Opt("--limit", int, None, "Evaluate a fixed random subset of N images."),
    json_flag("Print the metrics as JSON."),
)


@command(app, "evaluate", _EVALUATE_OPTIONS)
def evaluate_cmd(
    model_or_run: Annotated[Path, typer.Argument(help="Run folder (model.keras + config.json) or "
                                                 "a .keras file.")],
    data: str, split: str | None, limit: int | None, json_out: bool,
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
