"""Run the app under uvicorn: port checked first, connection timeouts, graceful SIGTERM.

The listening socket is bound before any model is loaded, so a port in use is reported at
once (exit code 2) and no other process can take the port while models load.

Connection timeouts (uvicorn has only the keep-alive one): a connection that sends nothing
is closed after ``idle_timeout_s`` like an idle keep-alive connection; one whose request
head is not complete ``header_timeout_s`` after its first byte is closed (slowloris). Body
timeouts are the app's (:func:`hmff_edge.serve.limits.read_body`).

On SIGTERM or SIGINT: readiness turns false at once, the listening socket closes (no new
connections), requests already received complete (uvicorn waits for them, then the lifespan
shutdown drains the batching queues), and the process exits 0. A second SIGINT forces exit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from hmff_edge.errors import ConfigError, UnavailableError
from hmff_edge.serve.app import create_app
from hmff_edge.serve.config import ServeConfig
from hmff_edge.serve.metrics import Metrics
from hmff_edge.serve.models import ModelManager
from hmff_edge.serve.routes import ServerState

log = logging.getLogger("hmff_edge.serve")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a :class:`ConfigError` naming the port when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UnavailableError(f"port {port} on {host} is already in use by another process; "
                              "choose another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def return_large_buffers_to_the_os() -> None:
    """glibc raises its mmap threshold after each large free (up to 32 MB), after which
    request-sized buffers come from the heap and stay in the process when freed: RSS climbs
    to the worst flood seen and stays there. A fixed 1 MiB threshold keeps every body, JSON
    text and tensor in its own mapping, returned to the OS when freed."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (glibc); other libcs lack mallopt
    except (OSError, AttributeError):
        pass


def timed_protocol(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a deadline on the request head and on idle new
    connections."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _head_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._head_timer is None:  # first bytes of a head: it must complete in time
                    self._head_timer = self.loop.call_later(header_timeout_s, self._head_late)
            else:
                self._cancel_head_timer()

        def _head_late(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.logger.info("closing a connection whose request head took over %s s",
                                 header_timeout_s)
                self.transport.close()

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

    return TimedH11Protocol


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
          config: ServeConfig | None = None, log_level: str = "info", access_log: bool = False,
          on_ready: Callable[[dict], None] | None = None) -> None:
    """Serve the repository (or model file) at ``model_path`` until SIGTERM/SIGINT."""
    import uvicorn

    t0 = time.perf_counter()
    cfg = config or ServeConfig()
    sock = bind(host, port)
    return_large_buffers_to_the_os()
    try:
        manager = ModelManager(model_path, cfg, Metrics())
        manager.load_initial()
    except BaseException:
        sock.close()
        raise
    app = create_app(manager, cfg)
    ucfg = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          lifespan="on", timeout_graceful_shutdown=30, server_header=False,
                          date_header=False, http=timed_protocol(cfg.header_timeout_s),
                          timeout_keep_alive=cfg.idle_timeout_s)  # type: ignore[arg-type]

    def started() -> None:
        if on_ready is not None:
            names = sorted(f"{mv.model}:{mv.version}" if len(vs) > 1 or mv.version != 1 else mv.model
                           for vs in manager.models.values() for mv in vs.values())
            on_ready({"models": names, "host": host, "port": port,
                      "load_s": round(time.perf_counter() - t0, 3)})

    _uvicorn_server_class()(ucfg, app.state.server, started).run(sockets=[sock])
