"""The ASGI application: V2 (Open Inference Protocol) and TensorFlow Serving routes,
image classification, health, metrics; API-key and metrics middleware."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hmff_edge import __version__
from hmff_edge.errors import DataError, HmffEdgeError
from hmff_edge.runtime import Predictor
from hmff_edge.serve.batching import Batcher, QueueFull
from hmff_edge.serve.limits import BodyBudget, HTTPError, read_body
from hmff_edge.serve.metrics import Metrics
from hmff_edge.serve.protocol import decode_tfserving, decode_v2, encode_v2, v2_datatype

log = logging.getLogger("hmff_edge.serve")

# Open without an API key: liveness (a process supervisor must always be able to ask) and
# readiness (load balancers probe it without credentials). Everything else needs the key.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


@dataclass
class ServeConfig:
    """Server settings (the CLI flags of ``hmff-edge serve``)."""

    # 1 by default: on the CPUs measured here (bench/results/serve_load*.md) LiteRT's cost per
    # image rises with the batch size, so coalescing lowers throughput. Raise it for engines
    # and devices whose per-image cost falls with batch size.
    max_batch: int = 1
    max_delay_ms: float = 2.0
    max_queue: int = 64
    max_body_mb: float = 16.0
    max_buffered_mb: float = 64.0  # request bodies held at once, all connections together
    api_key: str | None = None
    max_image_pixels: int = 16_000_000  # decompression-bomb bound for :classify uploads
    default_top_k: int = 5

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_buffered_bytes(self) -> int:
        # Never below one maximal body, or such a request could wait forever.
        return max(int(self.max_buffered_mb * 1024 * 1024), self.max_body_bytes)


@dataclass
class ServedModel:
    name: str
    predictor: Predictor
    batcher: Batcher


@dataclass
class ServerState:
    """Shared mutable state: readiness flips to False as soon as SIGTERM arrives."""

    ready: bool = False
    models: dict[str, ServedModel] = field(default_factory=dict)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status,
                    headers=headers, media_type="application/json")


def _error(status: int, message: str, *, close: bool = False,
           headers: dict[str, str] | None = None) -> Response:
    h = dict(headers or {})
    if close:
        h["Connection"] = "close"
    return _json({"error": message}, status, h)


Handler = Callable[[Request], Awaitable[Response]]


def _guard(fn: Handler) -> Handler:
    """Map every refusal to ``{"error": ...}`` with its status; a bug becomes a 500 with the
    same shape, and the server keeps serving."""

    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except HTTPError as exc:
            return _error(exc.status, exc.message, close=exc.close, headers=exc.headers)
        except QueueFull as exc:
            return _error(503, str(exc), headers={"Retry-After": "1"})
        except DataError as exc:
            return _error(400, str(exc))
        except HmffEdgeError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # pragma: no cover - a bug, but never a crash
            log.exception("internal error on %s", request.url.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    wrapper.__name__ = fn.__name__
    return wrapper


def create_app(predictors: dict[str, Predictor], config: ServeConfig | None = None,
               state: ServerState | None = None) -> Starlette:
    """Build the ASGI app serving ``predictors`` (name -> Predictor)."""
    cfg = config or ServeConfig()
    st = state or ServerState()
    metrics = Metrics()
    for name, p in predictors.items():
        fn = _engine_fn(p)
        batcher = Batcher(name, fn, max_batch=cfg.max_batch, max_delay_s=cfg.max_delay_ms / 1000,
                          max_queue=cfg.max_queue,
                          on_batch=lambda n, s, _m=name: metrics.observe_batch(_m, n, s))
        st.models[name] = ServedModel(name, p, batcher)
    metrics.queue_depth = lambda: {n: m.batcher.depth for n, m in st.models.items()}
    budget: list[BodyBudget] = []  # created on the server's event loop (lifespan startup)
    pre_pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                  thread_name_prefix="preprocess")

    @contextlib.asynccontextmanager
    async def buffered(request: Request):
        """Reserve the body's bytes in the shared budget while it is read and decoded."""
        b = budget[0]
        n = b.size_of(request, cfg.max_body_bytes)
        await b.acquire(n)
        try:
            yield
        finally:
            await b.release(n)

    def lookup(request: Request) -> ServedModel:
        name = request.path_params["model"]
        model = st.models.get(name)
        if model is None:
            raise HTTPError(404, f"model {name!r} not found; served models: {sorted(st.models)}",
                            close=True)
        return model

    # -- V2 -----------------------------------------------------------------------------
    async def server_metadata(request: Request) -> Response:
        return _json({"name": "hmff-edge", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        return _json({"ready": st.ready}, 200 if st.ready else 503)

    @_guard
    async def model_metadata(request: Request) -> Response:
        m = lookup(request)
        p = m.predictor
        return _json({
            "name": m.name, "versions": ["1"],
            "platform": "tflite" if p.format == "tflite" else "onnxruntime_onnx",
            "inputs": [{"name": p.input_name, "datatype": v2_datatype(p.input_dtype),
                        "shape": [-1, *p.sample_shape]}],
            "outputs": [{"name": p.output_name, "datatype": "FP32", "shape": [-1, len(p.labels)]}],
            "parameters": {"labels": p.labels, "model": p.metadata.model,
                           "quantization": p.metadata.quantization,
                           "mean": p.metadata.mean, "std": p.metadata.std},
        })

    @_guard
    async def model_ready(request: Request) -> Response:
        m = lookup(request)
        return _json({"name": m.name, "ready": st.ready}, 200 if st.ready else 503)

    @_guard
    async def v2_infer(request: Request) -> Response:
        m = lookup(request)
        async with buffered(request):
            body = await read_body(request, cfg.max_body_bytes)
            req = decode_v2(body, request.headers.get("inference-header-content-length"),
                            m.predictor)
            del body  # binary tensors are views of it and keep it alive; JSON ones free it now
        x = m.predictor.to_native(req.x) if req.is_float else req.x
        probs = await m.batcher.infer(x)
        content, headers = encode_v2(m.name, m.predictor.output_name, probs, req.binary_output,
                                     req.request_id)
        return Response(content, headers=headers)

    # -- TF Serving ---------------------------------------------------------------------
    @_guard
    async def tf_status(request: Request) -> Response:
        lookup(request)
        state = "AVAILABLE" if st.ready else "UNLOADING"
        return _json({"model_version_status": [
            {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": ""}}]})

    @_guard
    async def tf_predict(request: Request) -> Response:
        m = lookup(request)
        async with buffered(request):
            body = await read_body(request, cfg.max_body_bytes)
            x, key = decode_tfserving(body, m.predictor)
            del body
        probs = await m.batcher.infer(m.predictor.to_native(x))
        return _json({key: np.asarray(probs, np.float32).tolist()})

    @_guard
    async def tf_classify(request: Request) -> Response:
        m = lookup(request)
        top_k = _top_k(request, cfg.default_top_k, len(m.predictor.labels))
        p = m.predictor
        async with buffered(request):
            body = await read_body(request, cfg.max_body_bytes)
            ctype = request.headers.get("content-type", "")
            image = await _multipart_image(request, body) if ctype.startswith("multipart/") \
                else body
            if not image:
                raise HTTPError(400, "no image in the request: send the file as the raw body or "
                                     "as a multipart/form-data upload")
            # Decoding and resizing release the GIL in Pillow: off the event loop, on a small
            # pool of our own (few threads = few malloc arenas; anyio's default has 40).
            x = await asyncio.get_running_loop().run_in_executor(
                pre_pool, functools.partial(p.preprocess, [image],
                                            max_pixels=cfg.max_image_pixels))
            del body, image
        probs = await m.batcher.infer(p.to_native(x))
        return _json({"model_name": m.name, "predictions": p.top_k(probs, top_k)[0]})

    # -- metrics --------------------------------------------------------------------------
    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def startup() -> None:
        budget.append(BodyBudget(cfg.max_buffered_bytes))
        for m in st.models.values():
            m.batcher.start()
        st.ready = True

    async def shutdown() -> None:
        st.ready = False
        for m in st.models.values():
            await m.batcher.stop()
        pre_pool.shutdown(wait=True)

    v = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{model}", model_metadata, methods=["GET"]),
        Route(v, model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route(v + "/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
        Route(v + "/infer", v2_infer, methods=["POST"]),
        Route("/v1/models/{model}:predict", tf_predict, methods=["POST"]),
        Route("/v1/models/{model}:classify", tf_classify, methods=["POST"]),
        Route("/v1/models/{model}", tf_status, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        return _error(code, f"{request.method} {request.url.path}: "
                            f"{'no such endpoint' if code == 404 else 'method not allowed'}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await startup()
        try:
            yield
        finally:
            await shutdown()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_found})
    app.state.server = st
    app.state.metrics = metrics
    return Gate(app, metrics, cfg.api_key)  # type: ignore[return-value]


def _engine_fn(p: Predictor) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        return p.to_probabilities(p.run(x))

    return run


def _top_k(request: Request, default: int, n: int) -> int:
    raw = request.query_params.get("top_k")
    if raw is None:
        return min(default, n)
    try:
        k = int(raw)
    except ValueError:
        raise HTTPError(400, f"top_k must be an integer, got {raw!r}") from None
    if not 1 <= k <= n:
        raise HTTPError(400, f"top_k must be between 1 and {n}, got {k}")
    return k


async def _multipart_image(request: Request, body: bytes) -> bytes:
    """The first file of a multipart/form-data body (already read within the size limit)."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body
        yield b""

    parser = MultiPartParser(request.headers, stream(), max_files=4, max_fields=16,
                             max_part_size=len(body) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPError(400, f"malformed multipart body: {exc.message}") from None
    except Exception as exc:  # python-multipart raises its own types on garbage
        raise HTTPError(400, f"malformed multipart body: {exc}") from None
    try:
        for _key, value in form.multi_items():
            if hasattr(value, "read"):
                return await value.read()
        raise HTTPError(400, f"multipart body has no file part (fields: {sorted(form.keys())})")
    finally:
        await form.close()


_ENDPOINTS = [
    (re.compile(r"^/v2/?$"), "v2_server_metadata"),
    (re.compile(r"^/v2/health/live$"), "v2_live"),
    (re.compile(r"^/v2/health/ready$"), "v2_ready"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$"), "v2_infer"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/ready$"), "v2_model_ready"),
    (re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?$"), "v2_model_metadata"),
    (re.compile(r"^/v1/models/[^/]+:predict$"), "v1_predict"),
    (re.compile(r"^/v1/models/[^/]+:classify$"), "v1_classify"),
    (re.compile(r"^/v1/models/[^/]+$"), "v1_model_status"),
    (re.compile(r"^/metrics$"), "metrics"),
]


def endpoint_label(path: str) -> str:
    """A fixed label per route (never the raw path: bounded metric cardinality)."""
    for rx, label in _ENDPOINTS:
        if rx.match(path):
            return label
    return "other"


class Gate:
    """Outermost ASGI middleware: API-key check and per-request metrics."""

    def __init__(self, app: Starlette, metrics: Metrics, api_key: str | None) -> None:
        self.app = app
        self.state = app.state
        self.metrics = metrics
        self._key = f"Bearer {api_key}".encode() if api_key else None

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
                resp = _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                              close=True, headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(endpoint_label(scope["path"]), status, time.perf_counter() - t0)

    def _authorized(self, scope: dict) -> bool:
        for k, v in scope["headers"]:
            if k == b"authorization":
                return hmac.compare_digest(v, self._key)  # type: ignore[arg-type]
        return False
