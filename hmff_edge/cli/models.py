"""``hmff-edge models``: the zoo with parameters and MACs beside the paper's Table 2."""

from __future__ import annotations

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors, print_json
from hmff_edge.tables import text_table


def _fmt_int(n):
    return None if n is None else f"{int(n):,}"


def _fmt_pct(p):
    return None if p is None else f"{p:+.2f}%"


@app.command("models")
@handle_errors
def models_cmd(
    names: list[str] = typer.Argument(None, help="Variants to show (default: the paper's nine)."),
    img_size: int = typer.Option(224, "--img-size", help="Input height and width in pixels."),
    classes: int = typer.Option(10, "--classes", help="Number of output classes."),
    all_variants: bool = typer.Option(
        False, "--all", help="Also list the deployment-activation variants (-hs, -relu6)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the model variants with trainable parameters and multiply-accumulates (MACs).

    At 224x224 and 10 classes the paper's Table 2 figures and the deviation are shown
    beside the counts. MACs count convolutions and dense layers only.
    """
    from hmff_edge.models.registry import list_models
    from hmff_edge.models.table import summarize

    if not names and all_variants:
        names = list_models()
    rows = summarize(names or None, img_size=img_size, num_classes=classes)
    if as_json:
        print_json(rows)
        return
    view = [
        {
            "name": r["name"], "params": _fmt_int(r["params"]),
            "paper_params": _fmt_int(r["paper_params"]), "dp": _fmt_pct(r["params_dev_pct"]),
            "macs": f"{r['macs'] / 1e6:.2f}M",
            "paper_macs": None if r["paper_macs"] is None else f"{r['paper_macs'] / 1e6:.0f}M",
            "dm": _fmt_pct(r["macs_dev_pct"]),
            "acc": None if r["paper_accuracy"] is None else f"{r['paper_accuracy']:.3f}",
        }
        for r in rows
    ]
    typer.echo(f"{img_size}x{img_size} input, {classes} classes")
    typer.echo(text_table(view, [
        ("name", "model"), ("params", "params"), ("paper_params", "paper"), ("dp", "dev"),
        ("macs", "MACs"), ("paper_macs", "paper"), ("dm", "dev"), ("acc", "paper acc"),
    ]))
