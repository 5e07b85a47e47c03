"""The Typer application object; command modules attach themselves to it."""

import typer

app = typer.Typer(
    name="hmff-edge",
    help=(
        "Train HMFF-MobileNet and its baselines, export them to SavedModel / TFLite / ONNX, "
        "benchmark the exports and serve them.\n\n"
        "Typical flow: models -> train -> export -> bench / serve."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
