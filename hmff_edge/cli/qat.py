"""`hmff-edge qat`: a thin layer over :func:`hmff_edge.quant.finetune.qat_finetune`."""

from __future__ import annotations

from pathlib import Path

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors, print_json


@app.command("qat")
@handle_errors
def qat_cmd(
    run: Path = typer.Argument(..., help="Run folder to fine-tune (model.keras + config.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="New run folder for the QAT model "
                             "(must not exist or be empty)."),
    epochs: int = typer.Option(2, "--epochs", help="Fine-tuning epochs (1-100)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate, cosine-decayed to 0."),
    batch_size: int = typer.Option(None, "--batch-size", help="Batch size (default: the run's)."),
    distill: float = typer.Option(0.5, "--distill", help="Weight of the float model's "
                                  "probabilities in the loss (0 = labels only, 1 = teacher only)."),
    images: int = typer.Option(None, "--images", help="Fine-tune on a fixed subset of this "
                               "many training images (default: the run's whole training split)."),
    data: str = typer.Option(None, "--data", help="Training data, when the run's folder moved "
                             "(same classes)."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Quantization-aware fine-tuning: BN folded into the weights, per-channel int8 weights
    and learned activation ranges, trained with the float model as teacher. Writes a run
    folder whose int8 export uses the trained ranges (`hmff-edge export OUT -q int8`)."""
    from hmff_edge.quant.finetune import (
        QATConfig,
        check_data_reachable,
        check_out,
        qat_finetune,
        read_run_config,
    )

    cfg = QATConfig(epochs=epochs, lr=lr, batch_size=batch_size, distill=distill, data=data,
                    max_images=images, progress=not (quiet or json_out))
    cfg.validate()  # bad values refused before TensorFlow is imported
    check_data_reachable(read_run_config(run), data)
    check_out(out)
    metrics = qat_finetune(run, out, cfg)
    if json_out:
        print_json(metrics)
        return
    typer.echo(f"QAT accuracy {metrics['accuracy']:.4f} on the {metrics['split']} split "
               f"(float {metrics['float_accuracy']:.4f}, cost "
               f"{metrics['accuracy_cost_points']:+.2f} points; top-1 agreement with the float "
               f"model {metrics['qat_float_agreement']:.2%}) in {metrics['seconds']:.0f} s")
    typer.echo(f"wrote {out}")
