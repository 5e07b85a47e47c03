"""`hmff-edge serve`: serve exported models over HTTP (TF-free)."""

from __future__ import annotations

from pathlib import Path

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors


@app.command("serve")
@handle_errors
def serve(
    model: Path = typer.Argument(..., help="A .tflite/.onnx file, or a folder: every model in it "
                                           "is served under its file stem."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535),
    max_batch: int = typer.Option(1, "--max-batch", min=1,
                                  help="Most samples coalesced into one inference (1: no "
                                       "coalescing; raise it where batches run faster per image)."),
    max_delay_ms: float = typer.Option(2.0, "--max-delay-ms", min=0.0,
                                       help="Longest a request waits for others to batch with."),
    max_queue: int = typer.Option(64, "--max-queue", min=1,
                                  help="Requests waiting per model before new ones get 503."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", min=0.001,
                                      help="Largest request body (413 beyond, checked while streaming)."),
    max_buffered_mb: float = typer.Option(64.0, "--max-buffered-mb", min=0.001,
                                          help="Request bodies held at once over all "
                                               "connections; further uploads wait."),
    api_key: str = typer.Option(None, "--api-key", envvar="HMFF_EDGE_API_KEY",
                                help="Require 'Authorization: Bearer KEY' (liveness/readiness stay open)."),
    threads: int = typer.Option(None, "--threads", min=1,
                                help="Engine threads per model (default: all cores)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Serve MODEL over HTTP: Open Inference Protocol V2, TensorFlow Serving REST,
    image upload to /v1/models/NAME:classify, Prometheus /metrics."""
    from hmff_edge.errors import ConfigError
    from hmff_edge.serve import ServeConfig
    from hmff_edge.serve import serve as run_server

    levels = ("critical", "error", "warning", "info", "debug", "trace")
    if log_level.lower() not in levels:
        raise ConfigError(f"--log-level must be one of {', '.join(levels)}; got {log_level!r}")

    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"Warning: binding to {host} without --api-key: anyone who can reach this "
                   "port can use the models.", err=True)
    cfg = ServeConfig(max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue,
                      max_body_mb=max_body_mb, max_buffered_mb=max_buffered_mb,
                      api_key=api_key)

    def ready(info: dict) -> None:
        typer.echo(f"Serving {', '.join(info['models'])} on http://{host}:{port} "
                   f"(ready in {info['load_s']} s; SIGTERM/Ctrl-C to stop)", err=True)

    run_server(str(model), host=host, port=port, config=cfg, threads=threads,
               log_level=log_level.lower(), access_log=access_log, on_ready=ready)
