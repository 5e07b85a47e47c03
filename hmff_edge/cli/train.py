"""`hmff-edge train` and `hmff-edge evaluate`: thin layers over :mod:`hmff_edge.train`."""

from __future__ import annotations

from pathlib import Path

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors, print_json


@app.command("train")
@handle_errors
def train_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to create (or to --resume)."),
    model: str = typer.Option(None, "--model", "-m",
                              help="Zoo variant (see `hmff-edge models`) or module:function. "
                                   "Default hmff-mobilenet-32ch; hmff-mobilenet-16ch for the digits."),
    data: str = typer.Option(None, "--data", "-d",
                             help="Image folder (one subfolder per class, or train/ + test/), "
                                  "cifar-10-batches-py folder, or 'cifar10' (Keras download). "
                                  "Omitted: the embedded scikit-learn digits."),
    img_size: int = typer.Option(None, "--img-size", help="Input side in pixels (paper 224; "
                                 "digits default 32)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (paper 50; digits default 8)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Global batch (paper 64; digits 32)."),
    lr: float = typer.Option(None, "--lr", help="Initial Adam learning rate (paper 1e-3); "
                             "x0.75 every 10 epochs."),
    val_split: float = typer.Option(None, "--val-split", help="Validation share of the training "
                                    "images, stratified, fixed by --seed (default 0.1)."),
    test_data: str = typer.Option(None, "--test-data", help="Separate test image folder for "
                                  "metrics.json (else the data's test split, else validation)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Turn off random crop, flip, "
                                    "rotation."),
    train_limit: int = typer.Option(None, "--train-limit", help="Train on a fixed random "
                                    "subset of N training images (bounded CPU runs)."),
    bn_recalibrate: int = typer.Option(None, "--bn-recalibrate", help="Batches used to "
                                       "re-estimate BatchNorm statistics after each epoch "
                                       "(default 50; 0 = off)."),
    cache_gb: float = typer.Option(None, "--cache-gb", help="Hold decoded images in memory up "
                                   "to this many GiB (default 4); larger data streams from disk."),
    seed: int = typer.Option(None, "--seed", help="Seed for split, shuffling, init (default 0)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its "
                                "last completed epoch."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete a non-empty --out first."),
    early_stopping: int = typer.Option(None, "--early-stopping", help="Stop after N epochs "
                                       "without a better val_accuracy."),
    strategy: str = typer.Option(None, "--strategy", help="default | mirrored (all local GPUs) "
                                 "| multi-worker (reads TF_CONFIG)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or epoch lines."),
) -> None:
    """Train a model with the paper's recipe; write a run folder (model, metrics, plots)."""
    from hmff_edge.train import TrainConfig, fit, format_summary

    given = {
        "model": model, "data": data, "img_size": img_size, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "val_split": val_split, "test_data": test_data,
        "seed": seed, "early_stopping": early_stopping, "strategy": strategy,
        "augment": False if no_augment else None, "train_limit": train_limit,
        "bn_recalibrate": bn_recalibrate, "cache_gb": cache_gb,
    }
    explicit = {k for k, v in given.items() if v is not None}
    cfg = TrainConfig(out=str(out), **{k: v for k, v in given.items() if v is not None})
    cfg.validate()
    echo = (lambda s: None) if (quiet or json_out) else (lambda s: typer.echo(s, err=True))
    result = fit(cfg, resume=resume, overwrite=overwrite, explicit=explicit,
                 progress=not (quiet or json_out), echo=echo)
    if json_out:
        print_json({
            "run_dir": str(result.run_dir), "model": result.config["model"],
            "epochs_done": result.epochs_done, "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy, "eval_split": result.eval_split,
            "metrics": result.metrics, "history": result.history, "data": result.data,
            "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second,
            "optimizer_iterations": result.optimizer_iterations, "params": result.params,
        })
    elif result.metrics is not None:
        typer.echo(format_summary(result))


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
    """Recompute accuracy, precision, recall and the confusion matrix of a saved model."""
    from hmff_edge.train import evaluate, format_metrics

    m = evaluate(model_or_run, data, split=split, limit=limit)
    if json_out:
        print_json(m)
    else:
        typer.echo(f"{m['model']} on {m['data']} ({m['split']} split, {m['img_size']} px)")
        typer.echo(format_metrics(m))
