"""The Typer application object; command modules attach themselves to it."""

import typer

from hmff_edge.errors import EXIT_CODES

# One line per code; "\b" keeps Click from re-wrapping the block into one paragraph.
_EXIT_CODES = "Exit codes:\n\n\b\n" + "\n".join(
    f"{int(code):>4}  {text}" for code, text in EXIT_CODES.items())

app = typer.Typer(
    name="hmff-edge",
    help=(
        "Train HMFF-MobileNet and its baselines, export them to SavedModel / TFLite / ONNX, "
        "benchmark the exports and serve them.\n\n"
        "Typical flow: models -> train -> export -> predict / bench / serve."
    ),
    epilog=_EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
