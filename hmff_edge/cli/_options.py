"""Options declared as data: a command lists its options once, as a table of :class:`Opt`
rows in the order ``--help`` shows them.

A row gives the flags, type, default and help, and the field of the config the command
builds (``TrainConfig``, ``ExportOptions``, ``ServeConfig``, ...) that the option sets.
:func:`options` turns the table into the signature Typer reads; :func:`config_fields` and
:func:`given_fields` collect the config fields from the parsed values. Without the table
each option is written out twice more: in the signature and in the call that builds the
config.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar, get_origin

import typer

F = TypeVar("F", bound=Callable[..., Any])
_PARAMETER_NAME = object()  # Opt(field=...) default: the field named like the parameter


class Opt:
    """One command-line option.

    ``flags``: space-separated (``"--out -o"``); the parameter is named after the first long
    flag (``--max-batch`` -> ``max_batch``) unless ``name`` says otherwise. ``default``:
    ``...`` makes the option required. ``field``: the config field the option sets, by
    default the one named like the parameter; ``None`` for an option the command reads
    itself. Further keywords (``min``, ``envvar``, ...) go to :func:`typer.Option`.
    """

    __slots__ = ("flags", "type", "default", "help", "name", "field", "keywords")

    def __init__(self, flags: str, type_: Any, default: Any, help: str, *, name: str | None = None,
                 field: Any = _PARAMETER_NAME, **keywords: Any):
        self.flags = tuple(flags.split())
        self.type, self.default, self.help, self.keywords = type_, default, help, keywords
        long = next(f for f in self.flags if f.startswith("--"))
        self.name: str = name or long[2:].replace("-", "_")
        self.field: str | None = self.name if field is _PARAMETER_NAME else field

    def parameter(self) -> inspect.Parameter:
        """The keyword-only parameter Typer turns into this option."""
        info = typer.Option(*self.flags, help=self.help, **self.keywords)
        default = inspect.Parameter.empty if self.default is ... else self.default
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[self.type, info])


def json_flag(help: str, name: str = "json_out") -> Opt:
    """``--json``, which every command has: machine-readable output on stdout."""
    return Opt("--json", bool, False, help, name=name, field=None)


# `qat` and `export` print progress bars and nothing else that --quiet could silence.
QUIET = Opt("--quiet", bool, False, "No progress bars.", field=None)


def options(rows: Sequence[Opt]) -> Callable[[F], F]:
    """Declare a command's options from ``rows``.

    The command keeps its own leading parameters (``ctx: typer.Context`` and ``Annotated``
    arguments); after them come the rows, in table order. It takes the rows it reads by
    name and may collect the rest in ``**kwargs``. A parameter that is neither a row nor
    an annotated argument is refused here, so a misspelt name cannot turn into a
    positional argument.
    """
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise TypeError(f"option table names a parameter twice: {names}")

    def attach(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        lead, takes_rest = [], False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                takes_rest = True
            elif p.name not in names:
                if p.annotation is not typer.Context and get_origin(p.annotation) is not Annotated:
                    raise TypeError(f"{fn.__name__}: parameter {p.name!r} is not in the "
                                    "option table and not an annotated argument")
                lead.append(p)
        missing = set(names) - set(sig.parameters)
        if missing and not takes_rest:
            raise TypeError(f"{fn.__name__} takes no **kwargs for {sorted(missing)}")
        fn.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[*lead, *(r.parameter() for r in rows)])
        return fn

    return attach


def config_fields(rows: Sequence[Opt], values: Mapping[str, Any]) -> dict[str, Any]:
    """``{field: value}`` for every row that sets a config field."""
    return {r.field: values[r.name] for r in rows if r.field}


def given_fields(ctx: typer.Context, rows: Sequence[Opt]) -> dict[str, Any]:
    """Like :func:`config_fields`, for the options typed on the command line or set through
    the environment only: the others keep the config's (or the stored run's) value."""
    given = {}
    for r in rows:
        # By name: Typer may carry its own copy of click's ParameterSource enum.
        source = ctx.get_parameter_source(r.name) if r.field else None
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[r.field] = ctx.params[r.name]
    return given
