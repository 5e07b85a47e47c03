"""``hmff-edge bench MODEL... --device cpu|gpu|rpi`` and ``hmff-edge bench compare MODEL...``."""

from __future__ import annotations

from pathlib import Path

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors, print_json


@app.command("bench")
@handle_errors
def bench_cmd(
    models: list[str] = typer.Argument(
        ..., metavar="MODEL...",
        help="Exported .tflite/.onnx/.keras files or SavedModel folders, or variant names "
             "(exported on the fly with random weights). Start with 'compare' for the "
             "side-by-side table of the paper's Table 5 (arguments may then also be "
             "results.json files from earlier runs)."),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu | gpu | rpi"),
    profile: str = typer.Option(None, "--profile",
                                help="Device profile name or JSON file (bench/profiles/); "
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
                                                     "(default bench/.cache)"),
    baseline: str = typer.Option(None, "--baseline", help="compare: ratios against this "
                                                          "model (default: the first)"),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON"),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Write results.json, trials.csv, results.md, compare.md "
                                  "and PNG plots here"),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars"),
    roofline: bool = typer.Option(False, "--roofline", help="Also print each LiteRT model's "
                                  "MACs, bytes moved, this machine's measured GEMM peak and "
                                  "bandwidth, the lower-bound time and the achieved share"),
) -> None:
    """Latency and throughput of exports: load time, first inference, batch-1 latency
    (mean, std, min, p50, p90, p99) and a batch sweep 1, 2, 4, ... until out-of-memory or
    --max-batch, every trial in its own process. --device rpi without --host runs the Pi
    profile locally and labels every output as an emulation."""
    from hmff_edge.bench import BenchOptions, bench
    from hmff_edge.bench.report import (
        compare_table,
        load_results,
        terminal_table,
        write_outputs,
    )

    compare = bool(models) and models[0] == "compare"
    if compare:
        models = models[1:]
        if not models:
            from hmff_edge.errors import ConfigError

            raise ConfigError("bench compare needs at least one MODEL or results.json")
    opts = BenchOptions(
        device=device, profile=profile, runtime=runtime, threads=threads,
        batch_sizes=batch_sizes, max_batch=max_batch, memory_limit=memory_limit, runs=runs,
        seconds=seconds, warmup=warmup, host=host, ssh_key=ssh_key, ssh_port=ssh_port,
        ssh_options=tuple(ssh_option), remote_python=remote_python, quant=quant,
        img_size=img_size, classes=classes, cache=str(cache) if cache else None)
    results: list[dict] = []
    to_run = []
    for m in models:
        if compare and m.endswith(".json") and Path(m).is_file():
            results.extend(load_results(m))
        else:
            to_run.append(m)
    if to_run:
        results.extend(bench(to_run, opts, progress=not (no_progress or json_out)))
    if roofline:
        from hmff_edge.bench.roofline import attach

        attach(results)
    if out:
        write_outputs(results, out, baseline=baseline)
    if json_out:
        from hmff_edge.bench.runner import SCHEMA

        print_json({"schema": SCHEMA, "results": results})
        return
    typer.echo(compare_table(results, baseline) if compare else terminal_table(results))
    if roofline:
        from hmff_edge.bench.roofline import results_table

        typer.echo("\n" + results_table(results))
    if out:
        typer.echo(f"Wrote results.json, trials.csv, results.md, compare.md and plots to {out}")
