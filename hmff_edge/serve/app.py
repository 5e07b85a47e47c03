"""The ASGI application: the route table, exception handlers, lifespan, and the outer gate
(API key, per-route HTTP metrics).

Every route has a name; the HTTP metrics are labelled with it (``scope["route"].name`` after
routing), so the metric labels and the route table cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route

from hmff_edge.errors import HmffEdgeError
from hmff_edge.serve import routes as r
from hmff_edge.serve.batching import QueueFull
from hmff_edge.serve.budget import MemoryBudget
from hmff_edge.serve.config import ServeConfig
from hmff_edge.serve.limits import HTTPError
from hmff_edge.serve.metrics import Metrics, failure_reason
from hmff_edge.serve.models import ModelManager
from hmff_edge.serve.routes import ServerState, json_response

log = logging.getLogger("hmff_edge.serve")

# Open without an API key: liveness (a process supervisor must always be able to ask) and
# readiness (load balancers probe it without credentials). Everything else needs the key.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
# nginx's code for "client closed the request": counted, never sent (nobody is listening).
CLIENT_CLOSED = 499


class ModelNameConvertor(Convertor):
    """A model name is one path segment without ':' (``/v1/models/NAME:predict``)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model", ModelNameConvertor())

_M = "{model:model}"
_V = "/versions/{version:int}"
ROUTES = [
    Route("/v2", r.server_metadata, methods=["GET"], name="v2_server_metadata"),
    Route("/v2/health/live", r.live, methods=["GET"], name="v2_live"),
    Route("/v2/health/ready", r.ready, methods=["GET"], name="v2_ready"),
    Route(f"/v2/models/{_M}", r.model_metadata, methods=["GET"], name="v2_model_metadata"),
    Route(f"/v2/models/{_M}{_V}", r.model_metadata, methods=["GET"], name="v2_version_metadata"),
    Route(f"/v2/models/{_M}/ready", r.model_ready, methods=["GET"], name="v2_model_ready"),
    Route(f"/v2/models/{_M}{_V}/ready", r.model_ready, methods=["GET"], name="v2_version_ready"),
    Route(f"/v2/models/{_M}/infer", r.v2_infer, methods=["POST"], name="v2_infer"),
    Route(f"/v2/models/{_M}{_V}/infer", r.v2_infer, methods=["POST"], name="v2_version_infer"),
    Route("/v2/repository/index", r.repository_index, methods=["POST"], name="v2_repository_index"),
    Route(f"/v2/repository/models/{_M}/load", r.repository_load, methods=["POST"],
          name="v2_repository_load"),
    Route(f"/v2/repository/models/{_M}/unload", r.repository_unload, methods=["POST"],
          name="v2_repository_unload"),
    Route(f"/v1/models/{_M}:predict", r.tf_predict, methods=["POST"], name="v1_predict"),
    Route(f"/v1/models/{_M}{_V}:predict", r.tf_predict, methods=["POST"], name="v1_version_predict"),
    Route(f"/v1/models/{_M}:classify", r.tf_classify, methods=["POST"], name="v1_classify"),
    Route(f"/v1/models/{_M}{_V}:classify", r.tf_classify, methods=["POST"],
          name="v1_version_classify"),
    Route(f"/v1/models/{_M}", r.tf_status, methods=["GET"], name="v1_model_status"),
    Route(f"/v1/models/{_M}{_V}", r.tf_status, methods=["GET"], name="v1_version_status"),
    Route("/metrics", r.metrics, methods=["GET"], name="metrics"),
]


# -- exception handlers: every refusal is {"error": ...} with its status ----------------------
def error_response(status: int, message: str, *, close: bool = False,
                   headers: dict[str, str] | None = None) -> Response:
    h = dict(headers or {})
    if close:
        h["Connection"] = "close"
    return json_response({"error": message}, status, h)


def _count_failure(request: Request, status: int) -> None:
    mv = getattr(request.state, "version", None)
    if mv is not None:
        _server(request).metrics.request_failed(mv.model, mv.version, failure_reason(status))


def _server(request: Request) -> ServerState:
    return request.app.state.server


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    _count_failure(request, exc.status)
    return error_response(exc.status, exc.message, close=exc.close, headers=exc.headers)


async def on_queue_full(request: Request, exc: Exception) -> Response:
    _count_failure(request, 503)
    return error_response(503, str(exc), headers={"Retry-After": "1"})


async def on_bad_input(request: Request, exc: Exception) -> Response:
    _count_failure(request, 400)
    return error_response(400, str(exc))


async def on_disconnect(request: Request, exc: Exception) -> Response:
    # The client went away mid-request: its error, not ours; nothing to log as a failure.
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    _count_failure(request, CLIENT_CLOSED)
    return Response(status_code=CLIENT_CLOSED)


async def on_routing(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = exc.status_code
    what = "no such endpoint" if code == 404 else "method not allowed"
    return error_response(code, f"{request.method} {request.url.path}: {what}",
                          headers=dict(exc.headers or {}))


async def on_bug(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback after this answer; the server keeps serving.
    _count_failure(request, 500)
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


EXCEPTION_HANDLERS = {
    HTTPError: on_http_error,
    QueueFull: on_queue_full,
    HmffEdgeError: on_bad_input,
    ClientDisconnect: on_disconnect,
    HTTPException: on_routing,
    Exception: on_bug,
}


# -- lifespan ----------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    srv: ServerState = app.state.server
    srv.budget = MemoryBudget(srv.cfg.max_buffered_bytes)
    await srv.manager.start()
    poll = None
    if srv.cfg.poll_s:
        poll = asyncio.get_running_loop().create_task(srv.manager.poll(srv.cfg.poll_s))
    srv.ready = True
    try:
        yield
    finally:
        srv.ready = False
        if poll is not None:
            poll.cancel()
        await srv.manager.stop()
        srv.pool.shutdown(wait=True)


def create_app(manager: ModelManager, config: ServeConfig | None = None) -> Gate:
    """The ASGI app serving ``manager``'s models (call ``manager.load_initial()`` first)."""
    cfg = config or manager.cfg
    srv = ServerState(cfg=cfg, manager=manager, metrics=manager.metrics)
    srv.metrics.watch(manager.gauges,
                      lambda: (cfg.max_buffered_bytes, srv.budget.used if srv.budget else 0))
    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.server = srv
    return Gate(app, srv.metrics, cfg.api_key)


class Gate:
    """Outermost ASGI layer: API-key check and per-route HTTP metrics."""

    def __init__(self, app: Starlette, metrics: Metrics, api_key: str | None) -> None:
        self.app = app
        self.state = app.state
        self.metrics = metrics
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self._key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                resp = error_response(401, "missing or wrong API key: send 'Authorization: Bearer "
                                      "<key>'", close=True, headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_http(self._route_name(scope), status, time.perf_counter() - t0)

    def _route_name(self, scope: dict) -> str:
        route = scope.get("route")
        if route is None:  # refused before routing (401): match the table ourselves
            for candidate in ROUTES:
                if candidate.matches(scope)[0] != Match.NONE:
                    route = candidate
                    break
        return getattr(route, "name", None) or "other"

    def _authorized(self, scope: dict) -> bool:
        for k, v in scope["headers"]:
            if k == b"authorization":
                # The scheme is case-insensitive (RFC 7235); the key is compared in constant time.
                scheme, _, cred = v.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(cred.strip(), self._key)
        return False
