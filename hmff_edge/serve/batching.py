"""Dynamic batching: concurrent requests for one model coalesce into one inference.

One asyncio task per model collects queued requests until it has ``max_batch`` samples or
the oldest has waited ``max_delay_s``, then runs the batch on a dedicated single worker
thread (so the event loop keeps accepting and parsing requests meanwhile, and the engine is
only ever entered by one thread). While a batch runs, new requests queue up; their deadline
has usually passed by the time the worker is free, so under load batches form without any
added wait. The queue is bounded: when ``max_queue`` requests are waiting, :meth:`infer`
raises :class:`QueueFull` at once (the server answers 503) instead of letting latency and
memory grow without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class QueueFull(Exception):
    """The model's request queue is at ``max_queue``."""


class Batcher:
    def __init__(self, name: str, fn: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 8,
                 max_delay_s: float = 0.002, max_queue: int = 64,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError(f"invalid batching settings: max_batch={max_batch} "
                             f"max_queue={max_queue} max_delay_s={max_delay_s}")
        self.name = name
        self.fn = fn
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._items: deque[tuple[np.ndarray, asyncio.Future, float]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        self._stopping = False
        self.in_flight = 0  # requests handed to the worker thread

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (not yet handed to the engine)."""
        return len(self._items)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish everything queued, then stop the worker."""
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def infer(self, x: np.ndarray) -> np.ndarray:
        """Queue one request (a batch of >= 1 samples); returns its rows of the output."""
        if self._stopping:
            raise QueueFull("the server is shutting down")
        if len(self._items) >= self.max_queue:
            raise QueueFull(f"model {self.name!r} has {len(self._items)} requests queued "
                            f"(--max-queue {self.max_queue})")
        fut = asyncio.get_running_loop().create_future()
        self._items.append((x, fut, time.monotonic()))
        self._wakeup.set()  # type: ignore[union-attr]
        return await fut

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._items[0][2] + self.max_delay_s
            while self._samples() < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            xs = [b[0] for b in batch]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            self.in_flight = len(batch)
            t0 = time.perf_counter()
            try:
                y = await loop.run_in_executor(self._executor, self.fn, x)
            except Exception as exc:  # engine failure: every request of the batch gets it
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self.in_flight = 0
            if self.on_batch is not None:
                self.on_batch(len(x), time.perf_counter() - t0)
            start = 0
            for xi, fut, _ in batch:
                n = len(xi)
                if not fut.done():  # the client may have gone away
                    fut.set_result(y[start : start + n])
                start += n

    def _samples(self) -> int:
        return sum(len(x) for x, _, _ in self._items)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future, float]]:
        """Oldest requests up to ``max_batch`` samples (always at least one request)."""
        taken = [self._items.popleft()]
        total = len(taken[0][0])
        while self._items and total + len(self._items[0][0]) <= self.max_batch:
            item = self._items.popleft()
            taken.append(item)
            total += len(item[0])
        return taken
