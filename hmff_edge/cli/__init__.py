"""``hmff-edge`` command line: one small module per command, each a thin layer over the
library. Importing this package must not import TensorFlow (``hmff-edge --help`` stays fast
and works on a device that has only the runtime extra)."""

# Each module registers its command(s) on ``app`` when imported; the order is the order
# of the commands in ``--help``.
from hmff_edge.cli import models, train, qat, export, predict, serve, bench, device  # noqa: F401,I001
from hmff_edge.cli._app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
