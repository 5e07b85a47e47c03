"""The HTTP endpoints, one function each; :mod:`hmff_edge.serve.app` names and mounts them.

Handlers reach the server through ``request.app.state.server`` (a :class:`ServerState`)
and refuse by raising (:class:`HTTPError`, ``QueueFull``, ``ClientDisconnect``); the app's
exception handlers turn that into ``{"error": ...}`` and count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from hmff_edge import __version__
from hmff_edge.runtime import Predictor
from hmff_edge.serve.budget import MemoryBudget, Reservation
from hmff_edge.serve.config import ServeConfig
from hmff_edge.serve.limits import HTTPError, parse_json, read_body
from hmff_edge.serve.metrics import Metrics
from hmff_edge.serve.models import READY, ModelManager, ModelVersion
from hmff_edge.serve.protocol import (
    OUTPUT_NAME,
    check_output,
    decode_tfserving,
    decode_v2,
    dumps,
    encode_v2,
    v2_datatype,
)

# Bodies up to this size are decoded on the event loop (a thread hop costs more than that);
# larger ones on the decode pool, so the loop keeps answering health probes meanwhile.
INLINE_DECODE_BYTES = 64 * 1024
# Bytes held while Python's json builds one number (float object + list slot, ~32 bytes)
# and numpy converts it (8 + 4); with the text decoded to a str first (1 byte per byte),
# the reservation made before a JSON body is parsed.
JSON_BYTES_PER_NUMBER = 48


@dataclass
class ServerState:
    """What every handler shares. ``ready`` turns False as soon as shutdown starts."""

    cfg: ServeConfig
    manager: ModelManager
    metrics: Metrics
    ready: bool = False
    budget: MemoryBudget | None = None  # made on the server's event loop
    # Few threads = few malloc arenas (anyio's default pool has 40).
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="decode"))

    def reservation(self) -> Reservation:
        assert self.budget is not None
        return self.budget.reservation(time.monotonic() + self.cfg.body_timeout_s)

    def body_deadline(self) -> float:
        return time.monotonic() + self.cfg.body_timeout_s


def _srv(request: Request) -> ServerState:
    return request.app.state.server


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, headers=headers, media_type="application/json")


def _version(request: Request) -> int | None:
    return request.path_params.get("version")


async def _decode(srv: ServerState, res: Reservation, fn: Any, json_part: Any) -> Any:
    """Run a decoder, reserving the estimated cost of parsing ``json_part`` meanwhile; on the
    decode pool for large bodies."""
    text = json_part.tobytes() if isinstance(json_part, memoryview) else json_part
    cost = JSON_BYTES_PER_NUMBER * (text.count(b",") + 1) + len(text)
    del text
    await res.grow(cost)
    try:
        if len(json_part) <= INLINE_DECODE_BYTES:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(srv.pool, fn)
    finally:
        await res.shrink(cost)


@dataclass
class Call:
    """One inference request in progress: its version, memory reservation and body."""

    request: Request
    srv: ServerState
    mv: ModelVersion
    res: Reservation

    @property
    def predictor(self) -> Predictor:
        assert self.mv.predictor is not None
        return self.mv.predictor

    async def body(self) -> bytes | bytearray:
        cfg = self.srv.cfg
        return await read_body(self.request, cfg.max_body_bytes, self.res,
                               self.srv.body_deadline())

    async def run(self, x: np.ndarray) -> np.ndarray:
        assert self.mv.batcher is not None
        return await self.mv.batcher.infer(x)


@contextlib.asynccontextmanager
async def inference(request: Request) -> AsyncIterator[Call]:
    """Hold the requested version and a memory reservation for one inference request; a
    request that completes is counted as a success of that version."""
    srv = _srv(request)
    t0 = time.perf_counter()
    async with srv.manager.use(request.path_params["model"], _version(request)) as mv, \
            srv.reservation() as res:
        request.state.version = mv  # the exception handlers count failures against it
        yield Call(request, srv, mv, res)
    srv.metrics.request_done(mv.model, mv.version, time.perf_counter() - t0)


# -- V2: server -----------------------------------------------------------------------------
async def server_metadata(request: Request) -> Response:
    return json_response({"name": "hmff-edge", "version": __version__,
                          "extensions": ["binary_tensor_data", "model_repository"]})


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    srv = _srv(request)
    ok = srv.ready and srv.manager.is_ready()
    return json_response({"ready": ok}, 200 if ok else 503)


# -- V2: models -----------------------------------------------------------------------------
async def model_metadata(request: Request) -> Response:
    srv = _srv(request)
    name = request.path_params["model"]
    mv = srv.manager.resolve(name, _version(request))
    p = mv.predictor
    assert p is not None
    ready_versions = sorted(v for v, m in srv.manager.versions(name).items() if m.state == READY)
    return json_response({
        "name": name, "versions": [str(v) for v in ready_versions],
        "platform": "tflite" if p.format == "tflite" else "onnxruntime_onnx",
        "inputs": [{"name": p.input_name, "datatype": v2_datatype(p.input_dtype),
                    "shape": [-1, *p.sample_shape]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(p.labels)]}],
        "parameters": {"labels": p.labels, "model": p.metadata.model, "version": str(mv.version),
                       "quantization": p.metadata.quantization,
                       "mean": p.metadata.mean, "std": p.metadata.std},
    })


async def model_ready(request: Request) -> Response:
    srv = _srv(request)
    name, version = request.path_params["model"], _version(request)
    versions = srv.manager.versions(name)
    if version is None:
        ok = srv.ready and any(m.state == READY for m in versions.values())
        return json_response({"name": name, "ready": ok}, 200 if ok else 503)
    mv = versions.get(version)
    if mv is None:
        raise HTTPError(404, f"model {name!r} has no version {version}; versions: {sorted(versions)}")
    ok = srv.ready and mv.state == READY
    body = {"name": name, "version": str(version), "ready": ok, "state": mv.state}
    if mv.reason:
        body["reason"] = mv.reason
    return json_response(body, 200 if ok else 503)


async def v2_infer(request: Request) -> Response:
    async with inference(request) as call:
        p, res = call.predictor, call.res
        body = await call.body()
        hl = request.headers.get("inference-header-content-length")
        json_part = body if hl is None else memoryview(body)[: _int_or_zero(hl)]
        req = await _decode(call.srv, res, functools.partial(
            decode_v2, body, hl, p, call.srv.cfg.max_request_batch), json_part)
        del json_part
        x = p.to_native(req.x) if req.is_float else req.x
        # Binary tensors are views of the body (it stays held); JSON ones own their memory.
        keep = x.nbytes + (len(body) if np.shares_memory(x, np.frombuffer(body, np.uint8)) else 0)
        req.x = None  # type: ignore[assignment]
        del body
        await _resize(res, keep)
        probs = await call.run(x)
        content, headers = encode_v2(call.mv.model, call.mv.version, probs, req.binary_output,
                                     req.request_id)
    return Response(content, headers=headers)


def _int_or_zero(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0


async def _resize(res: Reservation, n: int) -> None:
    if n < res.held:
        await res.shrink(res.held - n)
    else:
        await res.grow(n - res.held)


# -- V2: repository extension -----------------------------------------------------------------
async def repository_index(request: Request) -> Response:
    srv = _srv(request)
    body = await request.body()
    ready_only = False
    if body.strip():
        req = parse_json(body)
        ready_only = bool(isinstance(req, dict) and req.get("ready"))
    index = srv.manager.index()
    if ready_only:
        index = [e for e in index if e["state"] == READY]
    return json_response(index)


async def repository_load(request: Request) -> Response:
    await _srv(request).manager.load_model(request.path_params["model"])
    return json_response({})


async def repository_unload(request: Request) -> Response:
    await _srv(request).manager.unload_model(request.path_params["model"])
    return json_response({})


# -- TensorFlow Serving ---------------------------------------------------------------------
_TF_STATES = {"LOADING": "LOADING", "READY": "AVAILABLE", "UNLOADING": "UNLOADING",
              "UNAVAILABLE": "END"}


async def tf_status(request: Request) -> Response:
    srv = _srv(request)
    versions = srv.manager.versions(request.path_params["model"])
    want = _version(request)
    if want is not None and want not in versions:
        raise HTTPError(404, f"model {request.path_params['model']!r} has no version {want}")
    out = []
    for v, mv in sorted(versions.items(), reverse=True):
        if want is not None and v != want:
            continue
        state = _TF_STATES[mv.state] if srv.ready else "UNLOADING"
        failed = mv.state == "UNAVAILABLE"
        out.append({"version": str(v), "state": state,
                    "status": {"error_code": "UNKNOWN" if failed else "OK",
                               "error_message": mv.reason if failed else ""}})
    return json_response({"model_version_status": out})


async def tf_predict(request: Request) -> Response:
    async with inference(request) as call:
        p = call.predictor
        body = await call.body()
        x, key = await _decode(call.srv, call.res, functools.partial(
            decode_tfserving, body, p, call.srv.cfg.max_request_batch), body)
        del body
        x = p.to_native(x)
        await _resize(call.res, x.nbytes)
        probs = check_output(await call.run(x))
    return json_response({key: probs.tolist()})


async def tf_classify(request: Request) -> Response:
    async with inference(request) as call:
        p, cfg = call.predictor, call.srv.cfg
        top_k = _top_k(request, cfg.default_top_k, len(p.labels))
        body = await call.body()
        ctype = request.headers.get("content-type", "")
        image = await _multipart_image(request, body) if ctype.startswith("multipart/") else body
        if not image:
            raise HTTPError(400, "no image in the request: send the file as the raw body or "
                                 "as a multipart/form-data upload")
        # Decoding holds about 4 bytes per pixel (RGBA at most) besides the encoded file.
        await call.res.grow(4 * min(_pixels(image), cfg.max_image_pixels))
        x = await asyncio.get_running_loop().run_in_executor(
            call.srv.pool, functools.partial(p.preprocess, [image], max_pixels=cfg.max_image_pixels))
        del body, image
        x = p.to_native(x)
        await _resize(call.res, x.nbytes)
        probs = check_output(await call.run(x))
    return json_response({"model_name": call.mv.model, "model_version": str(call.mv.version),
                          "predictions": p.top_k(probs, top_k)[0]})


def _pixels(image: bytes) -> int:
    """Pixels the image header declares (0 when unreadable: decoding will say why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as img:
            return img.width * img.height
    except Exception:  # noqa: BLE001 - the real decode reports the problem
        return 0


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


# -- metrics --------------------------------------------------------------------------------
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(_srv(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
