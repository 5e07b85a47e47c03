"""``hmff-edge bench [run] MODEL... --device cpu|gpu|rpi`` and ``hmff-edge bench compare``."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors, print_json


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

# Options that `run` and `compare` share.
_BASELINE = typer.Option(None, "--baseline", help="Ratios in the Table 5 shape (compare.md) "
                                                  "against this model (default: the first)")
_JSON = typer.Option(False, "--json", help="Print the results as JSON")
_ROOFLINE = typer.Option(False, "--roofline", help="Also each LiteRT model's MACs, bytes moved, "
                         "this machine's measured GEMM peak and bandwidth, the lower-bound "
                         "time and the achieved share (hmff_edge.bench.roofline)")
_OUT = typer.Option(None, "--out", "-o", help="Write results.json, trials.csv, results.md, "
                                              "compare.md and PNG plots (with matplotlib) here")


@bench_app.command("run")
@handle_errors
def run_cmd(
    models: list[str] = typer.Argument(
        ..., metavar="MODEL...",
        help="Exported .tflite/.onnx/.keras files or SavedModel folders, or variant names "
             "(exported on the fly with random weights and cached)."),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu | gpu | rpi"),
    profile: str = typer.Option(None, "--profile",
                                help="Device profile name (cpu, gpu, rpi4, rpi5) or a JSON file; "
                                     "default: the device's (rpi -> rpi4)"),
    runtime: str = typer.Option(None, "--runtime", "-r",
                                help="litert | onnxruntime | tensorflow (default: from the "
                                     "file; the profile's for variant names)"),
    threads: int = typer.Option(None, "--threads", "-t", help="Threads (default: profile)"),
    batch_sizes: str = typer.Option("auto", "--batch-sizes",
                                    help="'auto' (1,2,4,... doubling) or a list like 1,2,4"),
    max_batch: int = typer.Option(None, "--max-batch", help="Largest batch (default: profile)"),
    memory_limit: str = typer.Option(None, "--memory-limit",
                                     help="Address-space cap per trial, e.g. 512MiB, 2GiB"),
    runs: int = typer.Option(50, "--runs", help="Timed runs at batch 1 (fewer at larger "
                                                "batches: about the same images)"),
    seconds: float = typer.Option(0.0, "--seconds", help="Also time for at least S seconds"),
    warmup: int = typer.Option(5, "--warmup", help="Warm-up runs before timing"),
    host: str = typer.Option(None, "--host", help="USER@HOST[:PORT] of a device (rpi): "
                                                  "runs there over ssh"),
    ssh_key: str = typer.Option(None, "--ssh-key", help="Private key for --host"),
    ssh_port: int = typer.Option(None, "--ssh-port", help="ssh port for --host"),
    ssh_option: list[str] = typer.Option([], "--ssh-option", help="Extra ssh -o KEY=VALUE"),
    remote_python: str = typer.Option(None, "--remote-python",
                                      help="Python on the device (default: python3)"),
    quant: str = typer.Option("fp32", "--quant", help="fp32 | int8 (variant names)"),
    img_size: int = typer.Option(224, "--img-size", help="Input size (variant names)"),
    classes: int = typer.Option(10, "--classes", help="Classes (variant names)"),
    cache: Path = typer.Option(None, "--cache", help="Where variant exports are kept "
                                                     "(default: ~/.cache/hmff-edge/bench, "
                                                     "or $XDG_CACHE_HOME/hmff-edge/bench)"),
    baseline: str = _BASELINE,
    json_out: bool = _JSON,
    out: Path = _OUT,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars"),
    roofline: bool = _ROOFLINE,
) -> None:
    """Latency and throughput of exports: load time, first inference, batch-1 latency
    (mean, std, min, p50, p90, p99) and a batch sweep 1, 2, 4, ... until out-of-memory or
    --max-batch, every trial in its own process. --device rpi without --host runs the Pi
    profile locally and labels every output as an emulation."""
    from hmff_edge.bench import BenchOptions, bench
    from hmff_edge.bench.report import compare_table, terminal_table

    opts = BenchOptions(
        device=device, profile=profile, runtime=runtime, threads=threads,
        batch_sizes=batch_sizes, max_batch=max_batch, memory_limit=memory_limit, runs=runs,
        seconds=seconds, warmup=warmup, host=host, ssh_key=ssh_key, ssh_port=ssh_port,
        ssh_options=tuple(ssh_option), remote_python=remote_python, quant=quant,
        img_size=img_size, classes=classes, cache=str(cache) if cache else None)
    results = bench(models, opts, progress=not (no_progress or json_out))
    _emit(results, out, baseline, json_out, table=terminal_table(results), roofline=roofline)
    if not json_out and len(results) > 1:
        typer.echo("\n" + compare_table(results, baseline))


@bench_app.command("compare")
@handle_errors
def compare_cmd(
    results_files: list[Path] = typer.Argument(
        ..., metavar="RESULTS_JSON...",
        help="results.json files written by 'bench run --out' (or its --json output)."),
    baseline: str = _BASELINE,
    json_out: bool = _JSON,
    out: Path = _OUT,
    roofline: bool = _ROOFLINE,
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
