"""`hmff-edge qat`: a thin layer over :func:`hmff_edge.quant.finetune.qat_finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command, print_json
from hmff_edge.cli._options import QUIET, Opt, config_fields, json_flag

# Rows with a field are QATConfig fields.
_OPTIONS = (
    Opt("--out -o", Path, ..., "New run folder for the QAT model (must not exist or be empty).", field=None),
    Opt("--epochs", int, 2, "Fine-tuning epochs (1-100)."),
    Opt("--lr", float, 1e-4, "Adam learning rate, cosine-decayed to 0."),
    Opt("--batch-size", int, None, "Batch size (default: the run's)."),
    Opt("--distill", float, 0.5, "Weight of the float model's probabilities in the loss (0 = labels only, 1 "
        "= teacher only)."),
    Opt("--images", int, None, "Fine-tune on a fixed subset of this many training images (default: the run's "
        "whole training split).", field="max_images"),
    Opt("--data", str, None, "Training data, when the run's folder moved (same classes)."),
    json_flag("Print the metrics as JSON."),
    QUIET,
)


@command(app, "qat", _OPTIONS)
def qat_cmd(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="Run folder to fine-tune (model.keras + config.json).")],
    out: Path, data: str | None, json_out: bool, quiet: bool, **_config: object,
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

    cfg = QATConfig(progress=not (quiet or json_out), **config_fields(_OPTIONS, ctx.params))
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
