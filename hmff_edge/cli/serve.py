"""`hmff-edge serve`: serve exported models over HTTP (TF-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command
from hmff_edge.cli._options import Opt, config_fields

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

# Rows with a field are ServeConfig fields.
_OPTIONS = (
    Opt("--host", str, "127.0.0.1", "Interface to bind (loopback by default).", field=None),
    Opt("--port", int, 8080, "TCP port; one in use is refused (exit 5) before models load.",
        field=None, min=1, max=65535),
    Opt("--versions", str, "latest", "Version policy: latest, latest:N, all, or specific:1,3.", field=None),
    Opt("--poll", float, None, "Re-scan the repository every SECONDS: new versions are loaded, verified and "
        "swapped in; removed ones drained.", field="poll_s", min=0.1),
    Opt("--max-batch", int, 1, "Most samples coalesced into one inference (1: no coalescing; raise it where "
        "batches run faster per image).", min=1),
    Opt("--max-request-batch", int, 64, "Most samples one request may carry (400 beyond).", min=1),
    Opt("--max-delay-ms", float, 2.0, "Longest a request waits for others to batch with.", min=0.0),
    Opt("--max-queue", int, 64, "Requests waiting per model version before new ones get 503.", min=1),
    Opt("--max-body-mb", float, 16.0, "Largest request body (413 beyond, checked while streaming).",
        min=0.001),
    Opt("--max-buffered-mb", float, 64.0, "Memory for requests over all connections: bodies, decompressed "
        "bodies, JSON decoding, queued tensors; further requests wait, then get 503.", min=0.001),
    Opt("--header-timeout", float, 10.0, "Seconds to send a complete request head.",
        field="header_timeout_s", min=0.1),
    Opt("--body-timeout", float, 30.0, "Seconds to send the body once the head arrived (408).",
        field="body_timeout_s", min=0.1),
    Opt("--idle-timeout", float, 15.0, "Seconds an idle connection is kept open.",
        field="idle_timeout_s", min=0.1),
    Opt("--api-key", str, None, "Require 'Authorization: Bearer KEY' (liveness/readiness stay open).",
        envvar="HMFF_EDGE_API_KEY"),
    Opt("--threads", int, None, "Engine threads per model version (default: all cores).", min=1),
    Opt("--log-level", str, "warning", "uvicorn log level.", field=None),
    Opt("--access-log", bool, False, "Log every request.", field=None),
)


@command(app, "serve", _OPTIONS)
def serve(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(
        help="A model repository (REPO/<model>/<version>/model.tflite|onnx, as Triton and TF "
             "Serving lay it out), a folder of model files (each served under its stem), or one "
             ".tflite/.onnx file.")],
    host: str, port: int, versions: str, api_key: str | None, log_level: str, access_log: bool,
    **_config: object,
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
    cfg = ServeConfig(policy=policy, **config_fields(_OPTIONS, ctx.params))

    def ready(info: dict) -> None:
        typer.echo(f"Serving {', '.join(info['models'])} on http://{host}:{port} "
                   f"(ready in {info['load_s']} s; SIGTERM/Ctrl-C to stop)", err=True)

    run_server(str(model), host=host, port=port, config=cfg, log_level=log_level.lower(),
               access_log=access_log, on_ready=ready)
