"""Run the app under uvicorn with graceful SIGTERM handling.

On SIGTERM or SIGINT: readiness turns false at once, the listening socket closes (no new
connections), requests already received complete (uvicorn waits for them, then the lifespan
shutdown drains the batching queues), and the process exits 0. A second SIGINT forces exit.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from hmff_edge.serve.app import ServeConfig, ServerState, create_app
from hmff_edge.serve.registry import load_models

log = logging.getLogger("hmff_edge.serve")


def _uvicorn_server_class():
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn.Server that flips readiness on the first signal and does not re-raise the
        signal after its graceful shutdown (uvicorn's default), so the exit code is 0."""

        def __init__(self, config: Any, state: ServerState,
                     on_started: Callable[[], None] | None = None) -> None:
            super().__init__(config)
            self.state = state
            self.on_started = on_started

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.on_started is not None:
                self.on_started()

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {s: signal.signal(s, self._on_signal) for s in sigs}
            try:
                yield
            finally:
                for s, h in original.items():
                    signal.signal(s, h)

        def _on_signal(self, sig: int, frame: Any) -> None:
            self.state.ready = False
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    return GracefulServer


def serve(model_path: str, *, host: str = "127.0.0.1", port: int = 8080,
          config: ServeConfig | None = None, threads: int | None = None,
          log_level: str = "info", access_log: bool = False,
          on_ready: Callable[[dict], None] | None = None) -> None:
    """Load the model(s) at ``model_path`` and serve them until SIGTERM/SIGINT."""
    import uvicorn

    t0 = time.perf_counter()
    cfg = config or ServeConfig()
    predictors = load_models(model_path, threads=threads)
    state = ServerState()
    app = create_app(predictors, cfg, state)
    ucfg = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          lifespan="on", timeout_graceful_shutdown=30, server_header=False,
                          date_header=False)

    def started() -> None:
        if on_ready is not None:
            on_ready({"models": sorted(predictors), "host": host, "port": port,
                      "load_s": round(time.perf_counter() - t0, 3)})

    _uvicorn_server_class()(ucfg, state, started).run()
