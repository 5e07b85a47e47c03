"""Dynamic batching: concurrent requests for one model coalesce into one inference.

Each model has one worker thread that owns the engine. Request handlers (on the event loop)
put ``(tensor, future)`` items on a thread-safe queue; the worker takes the oldest, keeps
taking until it has ``max_batch`` samples or the oldest has waited ``max_delay_s``, runs the
batch, and hands each request its rows back through ``loop.call_soon_threadsafe``.

The worker pulls its next batch itself, so back-to-back inferences never wait for the event
loop (which may be busy receiving request bodies); it needs the GIL only briefly between
engine calls, which release it. Under load requests queue up while a batch runs, so the next
batch forms without added delay. The queue is bounded: with ``max_queue`` requests waiting,
:meth:`Batcher.infer` raises :class:`QueueFull` at once (the server answers 503) instead of
letting latency and memory grow without limit.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class QueueFull(Exception):
    """The model's request queue is at ``max_queue``."""


@dataclass
class _Item:
    x: np.ndarray
    fut: asyncio.Future
    t: float


_STOP = object()


def _resolve(fut: asyncio.Future, value: object, error: BaseException | None) -> None:
    if fut.done():  # the client went away and the handler was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


class Batcher:
    """One model version's request queue and engine thread. ``on_batch(samples, compute_s,
    queue_s_per_request)`` is called from the engine thread after each inference."""

    def __init__(self, name: str, fn: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 1,
                 max_delay_s: float = 0.002, max_queue: int = 64,
                 on_batch: Callable[[int, float, list[float]], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError(f"invalid batching settings: max_batch={max_batch} "
                             f"max_queue={max_queue} max_delay_s={max_delay_s}")
        self.name = name
        self.fn = fn
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._q: queue.Queue = queue.Queue()
        self._carry: _Item | None = None  # taken from the queue but did not fit the batch
        self._forming = 0  # requests gathered into the batch being formed (still waiting)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    @property
    def depth(self) -> int:
        """Requests waiting for the engine: queued, or gathered into a batch still forming."""
        return self._q.qsize() + (self._carry is not None) + self._forming

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=f"infer-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish everything queued, then stop the worker."""
        self._stopping = True
        self._q.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """Queue one request (a batch of >= 1 samples); returns its rows of the output."""
        if self._stopping:
            raise QueueFull("the server is shutting down")
        # Only the event loop adds items, so this check cannot race with another add.
        if self.depth >= self.max_queue:
            raise QueueFull(f"model {self.name!r} has {self.depth} requests queued "
                            f"(--max-queue {self.max_queue})")
        fut = asyncio.get_running_loop().create_future()
        self._q.put(_Item(x, fut, time.monotonic()))
        return await fut

    # -- worker thread ----------------------------------------------------------------------
    def _work(self) -> None:
        stop = False
        while not stop:
            first = self._carry if self._carry is not None else self._q.get()
            self._carry = None
            if first is _STOP:
                return
            batch = [first]
            self._forming = 1
            n = len(first.x)
            deadline = first.t + self.max_delay_s
            while n < self.max_batch:
                wait = deadline - time.monotonic()
                try:
                    nxt = self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                if n + len(nxt.x) > self.max_batch:
                    self._carry = nxt
                    break
                batch.append(nxt)
                self._forming = len(batch)
                n += len(nxt.x)
            self._forming = 0
            self._run(batch)
        # Drain what is left (only the carried item can remain after _STOP).
        if self._carry is not None:
            item, self._carry = self._carry, None
            self._run([item])

    def _run(self, batch: list[_Item]) -> None:
        assert self._loop is not None
        x = batch[0].x if len(batch) == 1 else np.concatenate([b.x for b in batch])
        started = time.monotonic()
        t0 = time.perf_counter()
        try:
            y = self.fn(x)
        except Exception as exc:  # engine failure: every request of the batch gets it
            for b in batch:
                self._loop.call_soon_threadsafe(_resolve, b.fut, None, exc)
            return
        seconds = time.perf_counter() - t0
        if self.on_batch is not None:  # called on this thread: it must be thread-safe
            self.on_batch(len(x), seconds, [started - b.t for b in batch])
        start = 0
        for b in batch:
            n = len(b.x)
            self._loop.call_soon_threadsafe(_resolve, b.fut, y[start : start + n], None)
            start += n
