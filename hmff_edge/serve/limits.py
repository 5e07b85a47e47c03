"""Input limits applied before any expensive work: body size (while streaming), content
encoding, JSON nesting depth, tensor shapes with overflow-safe products.

Every refusal raises :class:`HTTPError`; the app turns it into ``{"error": "..."}`` with the
status code, and the server keeps serving.
"""

from __future__ import annotations

import json
import re
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


async def read_body(request: Any, limit: int) -> bytes | bytearray:
    """Read the request body, refusing with 413 as soon as it exceeds ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked
    (or lying) body is counted while it streams and refused the moment it crosses the limit,
    so the server never holds more than ``limit`` bytes of one request.
    """
    n = declared_length(request, limit)
    if n is not None:
        # Known length: one buffer filled in place (no chunk list + join doubling the peak).
        buf = bytearray(n)
        view = memoryview(buf)
        total = 0
        async for chunk in request.stream():
            end = total + len(chunk)
            if end > n:
                raise HTTPError(400, f"request body longer than its Content-Length {n}", close=True)
            view[total:end] = chunk
            total = end
        if total != n:
            raise HTTPError(400, f"request body of {total} bytes, Content-Length said {n}")
        body: bytes | bytearray = buf
    else:
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise HTTPError(413, f"request body exceeds the limit of {limit} bytes", close=True)
            chunks.append(chunk)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        body = decompress(body, encoding, limit)
    return body


def decompress(body: bytes | bytearray, encoding: str, limit: int) -> bytes:
    """gzip / deflate request bodies (tritonclient can send them), bounded by ``limit`` so a
    small compressed body cannot expand into gigabytes."""
    if encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        d = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise HTTPError(415, f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, f"cannot decompress {encoding} body: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HTTPError(413, f"decompressed body exceeds the limit of {limit} bytes")
    return out


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
    try:
        return json.loads(data.tobytes() if isinstance(data, memoryview) else data)
    except (ValueError, RecursionError) as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from None


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


class BodyBudget:
    """Bounds the request-body bytes held at once across all connections.

    A request reserves its declared ``Content-Length`` (or the body limit when the length is
    unknown, i.e. chunked) before its body is read, and releases it once the body is decoded.
    When the budget is spent, further requests wait (their bytes stay in the kernel: uvicorn
    stops reading a connection whose body is not consumed) instead of all being buffered:
    64 clients uploading 3 MB JSON bodies at once hold at most ``total`` bytes, not 200 MB.
    """

    def __init__(self, total: int) -> None:
        import asyncio

        self.total = total
        self.free = total
        self._cond = asyncio.Condition()

    def size_of(self, request: Any, limit: int) -> int:
        """Bytes to reserve; raises the same 400/413 as :func:`read_body` for a bad or
        oversized ``Content-Length``, so such requests are refused without waiting."""
        n = declared_length(request, limit)
        return min(limit if n is None else n, self.total)

    async def acquire(self, n: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= n)
            self.free -= n

    async def release(self, n: int) -> None:
        async with self._cond:
            self.free += n
            self._cond.notify_all()
