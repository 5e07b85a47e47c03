"""``hmff-edge`` command line: one small module per command, each a thin layer over the
library. Importing this package must not import TensorFlow (``hmff-edge --help`` stays fast
and works on a device that has only the runtime extra)."""

from hmff_edge.cli._app import app

# Each module registers its command(s) on ``app`` when imported.
from hmff_edge.cli import models  # noqa: E402,F401,I001
from hmff_edge.cli import train  # noqa: E402,F401
from hmff_edge.cli import export  # noqa: E402,F401
from hmff_edge.cli import predict  # noqa: E402,F401
from hmff_edge.cli import serve  # noqa: E402,F401
from hmff_edge.cli import bench  # noqa: E402,F401


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
