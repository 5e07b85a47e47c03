"""``hmff-edge models``: the zoo with parameters and MACs beside the paper's Table 2."""

from __future__ import annotations

from typing import Annotated

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command, print_json
from hmff_edge.cli._options import Opt, json_flag
from hmff_edge.tables import text_table


def _fmt_int(n):
    return None if n is None else f"{int(n):,}"


def _fmt_pct(p):
    return None if p is None else f"{p:+.2f}%"


_OPTIONS = (
    Opt("--img-size", int, 224, "Input height and width in pixels."),
    Opt("--classes", int, 10, "Number of output classes."),
    Opt("--all", bool, False, "Also list the deployment-activation variants (-hs, -relu6).",
        name="all_variants"),
    json_flag("Print a JSON list instead of a table.", name="as_json"),
)


@command(app, "models", _OPTIONS)
def models_cmd(
    names: Annotated[list[str] | None, typer.Argument(
        help="Variants to show (default: the paper's nine).")] = None,
    *, img_size: int, classes: int, all_variants: bool, as_json: bool,
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
