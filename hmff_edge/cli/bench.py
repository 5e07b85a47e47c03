"""``hmff-edge bench [run] MODEL... --device cpu|gpu|rpi`` and ``hmff-edge bench compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command, print_json
from hmff_edge.cli._options import Opt, config_fields, json_flag


class _RunByDefault(TyperGroup):
    """``bench MODEL...`` means ``bench run MODEL...``: anything but a sub-command name or
    ``--help`` as the first argument selects ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=_RunByDefault, no_args_is_help=True, rich_markup_mode=None,
    help="Latency, throughput and the batch sweep of exported models ('run', the default), "
         "and the side-by-side table of saved results ('compare').")
app.add_typer(bench_app, name="bench")

# Options that `run` and `compare` share; `run`'s rows with a field are BenchOptions fields.
_BASELINE = Opt("--baseline", str, None, "Ratios in the Table 5 shape (compare.md) against this model "
                "(default: the first)", field=None)
_JSON = json_flag("Print the results as JSON")
_OUT = Opt("--out -o", Path, None, "Write results.json, trials.csv, results.md, compare.md and PNG plots "
           "(with matplotlib) here", field=None)
_ROOFLINE = Opt("--roofline", bool, False, "Also each LiteRT model's MACs, bytes moved, this machine's "
                "measured GEMM peak and bandwidth, the lower-bound time and the achieved share "
                "(hmff_edge.bench.roofline)", field=None)
_COMPARE_OPTIONS = (_BASELINE, _JSON, _OUT, _ROOFLINE)
_RUN_OPTIONS = (
    Opt("--device -d", str, "cpu", "cpu | gpu | rpi"),
    Opt("--profile", str, None, "Device profile name (cpu, gpu, rpi4, rpi5) or a JSON file; default: the "
        "device's (rpi -> rpi4)"),
    Opt("--runtime -r", str, None, "litert | onnxruntime | tensorflow (default: from the file; the profile's "
        "for variant names)"),
    Opt("--threads -t", int, None, "Threads (default: profile)"),
    Opt("--batch-sizes", str, "auto", "'auto' (1,2,4,... doubling) or a list like 1,2,4"),
    Opt("--max-batch", int, None, "Largest batch (default: profile)"),
    Opt("--memory-limit", str, None, "Address-space cap per trial, e.g. 512MiB, 2GiB"),
    Opt("--runs", int, 50, "Timed runs at batch 1 (fewer at larger batches: about the same images)"),
    Opt("--seconds", float, 0.0, "Also time for at least S seconds"),
    Opt("--warmup", int, 5, "Warm-up runs before timing"),
    Opt("--host", str, None, "USER@HOST[:PORT] of a device (rpi): runs there over ssh"),
    Opt("--ssh-key", str, None, "Private key for --host"),
    Opt("--ssh-port", int, None, "ssh port for --host"),
    Opt("--ssh-option", list[str], [], "Extra ssh -o KEY=VALUE", field=None),
    Opt("--remote-python", str, None, "Python on the device (default: python3)"),
    Opt("--quant", str, "fp32", "fp32 | int8 (variant names)"),
    Opt("--img-size", int, 224, "Input size (variant names)"),
    Opt("--classes", int, 10, "Classes (variant names)"),
    Opt("--cache", Path, None, "Where variant exports are kept (default: ~/.cache/hmff-edge/bench, or "
        "$XDG_CACHE_HOME/hmff-edge/bench)", field=None),
    _BASELINE,
    _JSON,
    _OUT,
    Opt("--no-progress", bool, False, "No progress bars", field=None),
    _ROOFLINE,
)


@command(bench_app, "run", _RUN_OPTIONS)
def run_cmd(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Argument(
        metavar="MODEL...",
        help="Exported .tflite/.onnx/.keras files or SavedModel folders, or variant names "
             "(exported on the fly with random weights and cached).")],
    ssh_option: list[str], cache: Path | None, baseline: str | None, json_out: bool, out: Path | None,
    no_progress: bool, roofline: bool, **_options: object,
) -> None:
    """Latency and throughput of exports: load time, first inference, batch-1 latency
    (mean, std, min, p50, p90, p99) and a batch sweep 1, 2, 4, ... until out-of-memory or
    --max-batch, every trial in its own process. --device rpi without --host runs the Pi
    profile locally and labels every output as an emulation."""
    from hmff_edge.bench import BenchOptions, bench
    from hmff_edge.bench.report import compare_table, terminal_table

    opts = BenchOptions(ssh_options=tuple(ssh_option), cache=str(cache) if cache else None,
                        **config_fields(_RUN_OPTIONS, ctx.params))
    results = bench(models, opts, progress=not (no_progress or json_out))
    _emit(results, out, baseline, json_out, table=terminal_table(results), roofline=roofline)
    if not json_out and len(results) > 1:
        typer.echo("\n" + compare_table(results, baseline))


@command(bench_app, "compare", _COMPARE_OPTIONS)
def compare_cmd(
    results_files: Annotated[list[Path], typer.Argument(
        metavar="RESULTS_JSON...",
        help="results.json files written by 'bench run --out' (or its --json output).")],
    baseline: str | None, json_out: bool, out: Path | None, roofline: bool,
) -> None:
    """The paper's Table 5 shape (latency, throughput, params, MACs, GFLOP/s, ratio to a
    baseline) from saved bench results, without measuring again."""
    from hmff_edge.bench.report import compare_table, load_results

    results = [r for path in results_files for r in load_results(path)]
    _emit(results, out, baseline, json_out, table=compare_table(results, baseline),
          roofline=roofline)


def _emit(results: list[dict], out: Path | None, baseline: str | None, json_out: bool,
          table: str, roofline: bool = False) -> None:
    """Files under ``out``, then JSON or the human table on stdout (with ``roofline``, each
    LiteRT result gets its roofline first and the roofline table follows)."""
    from hmff_edge.bench.report import write_outputs
    from hmff_edge.bench.runner import SCHEMA

    if roofline:
        from hmff_edge.bench.roofline import attach, results_table

        attach(results)
        table += "\n\n" + results_table(results)

    written = write_outputs(results, out, baseline=baseline) if out else []
    if json_out:
        print_json({"schema": SCHEMA, "results": results})
        return
    typer.echo(table)
    if written:
        typer.echo(f"Wrote {', '.join(p.name for p in written)} to {out}")
