"""Helpers shared by the command modules: registration, error reporting and JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer

from hmff_edge.cli._options import Opt, options
from hmff_edge.errors import ExitCode, HmffEdgeError

F = TypeVar("F", bound=Callable[..., Any])


def command(group: typer.Typer, name: str, rows: Sequence[Opt]) -> Callable[[F], F]:
    """Register the function as command ``name`` of ``group``, its options declared by the
    table ``rows`` (:func:`~hmff_edge.cli._options.options`), its errors reported by
    :func:`handle_errors`."""

    def register(fn: F) -> F:
        return group.command(name)(handle_errors(options(rows)(fn)))

    return register


def handle_errors(fn: F) -> F:
    """Turn :class:`HmffEdgeError` into ``Error: <message>`` on stderr and its class's exit code.

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HmffEdgeError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=int(exc.exit_code)) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            raise typer.Exit(code=int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Machine-readable output on stdout (nothing else goes to stdout with --json)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
