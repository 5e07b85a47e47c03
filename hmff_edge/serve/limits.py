"""Input limits applied before any expensive work: body size and time (while streaming),
content encoding, JSON nesting depth and strictness, finite values, tensor shapes with
overflow-safe products.

Every refusal raises :class:`HTTPError`; the app turns it into ``{"error": "..."}`` with the
status code, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

# No valid request nests deeper than ~8 (V2: object > inputs list > object > 4-D data);
# anything deeper is refused before the JSON parser (which recurses) sees it.
MAX_JSON_DEPTH = 20
# Largest single dimension accepted; products are computed with Python ints (no overflow).
MAX_DIM = 2**31 - 1

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Everything but brackets, quotes and backslashes is irrelevant to nesting: deleting it first
# (bytes.translate, C speed) shrinks a 3 MB tensor body to a few bytes before the string scan.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"\\')


class HTTPError(Exception):
    """A request refused with ``status`` and a message for ``{"error": ...}``.

    ``close`` asks the server to close the connection after answering, used when the body
    was not read (uvicorn would otherwise drain it to keep the connection alive).
    """

    def __init__(self, status: int, message: str, *, close: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = headers or {}


def declared_length(request: Any, limit: int) -> int | None:
    """The request's ``Content-Length`` (None when chunked), refused with 413 when over
    ``limit`` before a byte of the body is read."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        n = int(declared)
    except ValueError:
        raise HTTPError(400, f"invalid Content-Length {declared!r}", close=True) from None
    if n < 0:
        raise HTTPError(400, f"invalid Content-Length {declared!r}", close=True)
    if n > limit:
        raise HTTPError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes",
                        close=True)
    return n


async def read_body(request: Any, limit: int, reservation: Any, deadline: float) -> bytes | bytearray:
    """Read the request body into ``reservation``, refusing with 413 as soon as it exceeds
    ``limit`` bytes and with 408 when it has not arrived by ``deadline`` (monotonic).

    A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked
    (or lying) body is counted while it streams and refused the moment it crosses the limit.
    Each chunk is reserved as it arrives, so a stalled upload holds only what it sent.
    Compressed bodies are decompressed here, the output reserved as it grows.
    """
    n = declared_length(request, limit)
    chunks: list[bytes] = []
    total = 0
    stream = request.stream()
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                chunk = await anext(stream, None)
        except TimeoutError:
            raise HTTPError(408, f"request body not received within the body timeout "
                                 f"({total} of {n if n is not None else 'unknown'} bytes arrived)",
                            close=True) from None
        if chunk is None:
            break
        if not chunk:
            continue
        total += len(chunk)
        if n is not None and total > n:
            raise HTTPError(400, f"request body longer than its Content-Length {n}", close=True)
        if total > limit:
            raise HTTPError(413, f"request body exceeds the limit of {limit} bytes", close=True)
        await reservation.grow(len(chunk))
        chunks.append(chunk)
    if n is not None and total != n:
        raise HTTPError(400, f"request body of {total} bytes, Content-Length said {n}")
    if len(chunks) == 1:
        body: bytes | bytearray = chunks[0]
    else:  # the chunks and their join coexist while joining
        await reservation.grow(total)
        body = b"".join(chunks)
        del chunks
        await reservation.shrink(total)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        out = await decompress(body, encoding, limit, reservation)
        await reservation.shrink(len(body))
        return out
    return body


async def decompress(body: bytes | bytearray, encoding: str, limit: int,
                     reservation: Any = None) -> bytes:
    """gzip / deflate request bodies (tritonclient can send them), bounded by ``limit`` so a
    small compressed body cannot expand into gigabytes. The most the output can be (deflate
    expands at most ~1032:1, and never beyond ``limit``) is reserved before decompressing:
    a flood of small bombs waits for the budget instead of expanding together."""
    if encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        d = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise HTTPError(415, f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    worst = min(limit + 1, len(body) * MAX_DEFLATE_RATIO + 1024)
    if reservation is not None:
        await reservation.grow(worst)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, f"cannot decompress {encoding} body: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HTTPError(413, f"decompressed body exceeds the limit of {limit} bytes")
    if reservation is not None:
        await reservation.shrink(worst - len(out))
    return out


MAX_DEFLATE_RATIO = 1032


def json_depth(data: bytes | bytearray | memoryview) -> int:
    """Maximum nesting depth of ``[``/``{`` in a JSON text, strings excluded (vectorized)."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    stripped = _STRING.sub(b"", bytes(data.translate(None, _NOT_STRUCTURE)))
    a = np.frombuffer(stripped, np.uint8)
    opens = (a == ord("[")) | (a == ord("{"))
    closes = (a == ord("]")) | (a == ord("}"))
    if not opens.any():
        return 0
    step = opens.astype(np.int32) - closes.astype(np.int32)
    return int(np.cumsum(step).max())


def parse_json(data: bytes | bytearray | memoryview, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON request body, refusing malformed text and excessive nesting with 400."""
    if not len(data):
        raise HTTPError(400, "empty request body; expected a JSON object")
    depth = json_depth(data)
    if depth > max_depth:
        raise HTTPError(400, f"JSON nested {depth} levels deep; at most {max_depth} allowed")
    # The C parser holds the GIL for the whole text (~0.2 s per 16 MB), stalling the event
    # loop even from another thread; a Python-level number hook lets the interpreter switch
    # threads every few milliseconds, for ~35% more parse time on large bodies only.
    hooks = {"parse_float": _float, "parse_int": _int} if len(data) > COOPERATIVE_JSON_BYTES else {}
    try:
        return json.loads(data.tobytes() if isinstance(data, memoryview) else data,
                          parse_constant=_refuse_constant, **hooks)
    except NonFinite as exc:
        raise HTTPError(400, str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from None


COOPERATIVE_JSON_BYTES = 64 * 1024


def _float(text: str) -> float:
    return float(text)


def _int(text: str) -> int:
    return int(text)


class NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN / Infinity, which are not JSON (RFC 8259) and not an input.
    raise NonFinite(f"{name} is not a valid JSON number; inputs must be finite")


def check_finite(x: np.ndarray, what: str = "input") -> None:
    """Refuse NaN / infinity (also from numbers that overflow the tensor's dtype) with 400."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = x[~np.isfinite(x)].flat[0]
        raise HTTPError(400, f"{what} holds a non-finite value ({bad}); a number too large "
                             f"for {x.dtype.name} overflows to infinity; inputs must be finite")


def check_shape(shape: Any, sample_shape: Sequence[int], *, what: str = "shape") -> tuple[int, ...]:
    """Validate a client-declared ``[batch, *sample_shape]`` with overflow-safe arithmetic."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise HTTPError(400, f"{what} must be a list of integers, got {_short(shape)}")
    for d in shape:
        if d <= 0:
            raise HTTPError(400, f"{what} {_short(shape)} has a non-positive dimension {d}")
        if d > MAX_DIM:
            raise HTTPError(400, f"{what} {_short(shape)} has a dimension larger than {MAX_DIM}")
    want = [-1, *sample_shape]
    if len(shape) != len(want) or list(shape[1:]) != list(sample_shape):
        raise HTTPError(
            400, f"{what} {_short(shape)} does not match the model input [N, "
            f"{', '.join(map(str, sample_shape))}]"
        )
    return tuple(shape)


def num_elements(shape: Sequence[int]) -> int:
    """Exact product (Python ints never overflow)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
