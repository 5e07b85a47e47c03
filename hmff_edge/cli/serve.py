"""`hmff-edge serve`: serve exported models over HTTP (TF-free)."""

from __future__ import annotations

from pathlib import Path

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@app.command("serve")
@handle_errors
def serve(
    model: Path = typer.Argument(..., help="A model repository (REPO/<model>/<version>/model."
                                           "tflite|onnx, as Triton and TF Serving lay it out), a "
                                           "folder of model files (each served under its stem), "
                                           "or one .tflite/.onnx file."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535,
                             help="TCP port; one in use is refused (exit 5) before models load."),
    versions: str = typer.Option("latest", "--versions",
                                 help="Version policy: latest, latest:N, all, or specific:1,3."),
    poll: float = typer.Option(None, "--poll", min=0.1,
                               help="Re-scan the repository every SECONDS: new versions are "
                                    "loaded, verified and swapped in; removed ones drained."),
    max_batch: int = typer.Option(1, "--max-batch", min=1,
                                  help="Most samples coalesced into one inference (1: no "
                                       "coalescing; raise it where batches run faster per image)."),
    max_request_batch: int = typer.Option(64, "--max-request-batch", min=1,
                                          help="Most samples one request may carry (400 beyond)."),
    max_delay_ms: float = typer.Option(2.0, "--max-delay-ms", min=0.0,
                                       help="Longest a request waits for others to batch with."),
    max_queue: int = typer.Option(64, "--max-queue", min=1,
                                  help="Requests waiting per model version before new ones get 503."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", min=0.001,
                                      help="Largest request body (413 beyond, checked while streaming)."),
    max_buffered_mb: float = typer.Option(64.0, "--max-buffered-mb", min=0.001,
                                          help="Memory for requests over all connections: bodies, "
                                               "decompressed bodies, JSON decoding, queued tensors; "
                                               "further requests wait, then get 503."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.1,
                                         help="Seconds to send a complete request head."),
    body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1,
                                       help="Seconds to send the body once the head arrived (408)."),
    idle_timeout: float = typer.Option(15.0, "--idle-timeout", min=0.1,
                                       help="Seconds an idle connection is kept open."),
    api_key: str = typer.Option(None, "--api-key", envvar="HMFF_EDGE_API_KEY",
                                help="Require 'Authorization: Bearer KEY' (liveness/readiness stay open)."),
    threads: int = typer.Option(None, "--threads", min=1,
                                help="Engine threads per model version (default: all cores)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Serve MODEL over HTTP: Open Inference Protocol V2 (per version, repository extension),
    TensorFlow Serving REST, image upload to /v1/models/NAME:classify, Prometheus /metrics."""
    from hmff_edge.errors import ConfigError
    from hmff_edge.serve import ServeConfig, VersionPolicy
    from hmff_edge.serve import serve as run_server

    if log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {log_level!r}")
    policy = VersionPolicy.parse(versions)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        typer.echo(f"Warning: binding to {host} without --api-key: anyone who can reach this "
                   "port can use the models.", err=True)
    cfg = ServeConfig(max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue,
                      max_request_batch=max_request_batch, max_body_mb=max_body_mb,
                      max_buffered_mb=max_buffered_mb, header_timeout_s=header_timeout,
                      body_timeout_s=body_timeout, idle_timeout_s=idle_timeout, api_key=api_key,
                      poll_s=poll, policy=policy, threads=threads)

    def ready(info: dict) -> None:
        typer.echo(f"Serving {', '.join(info['models'])} on http://{host}:{port} "
                   f"(ready in {info['load_s']} s; SIGTERM/Ctrl-C to stop)", err=True)

    run_server(str(model), host=host, port=port, config=cfg, log_level=log_level.lower(),
               access_log=access_log, on_ready=ready)
