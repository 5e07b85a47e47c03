"""One memory budget for everything a request makes the server hold.

A request's :class:`Reservation` grows as its body arrives (chunk by chunk, so a stalled
upload holds only what it sent, never its declared length), when its body is decompressed,
by the estimated cost of parsing its JSON, and by its decoded tensor while that waits in the
queue and runs; it shrinks as each stage frees its input and closes with the response.
When the budget is spent, growing waits (the kernel holds the unread bytes: uvicorn stops
reading a connection whose body is not consumed) up to a deadline, then the request is
refused with 503 and ``Retry-After``, so requests that each hold part of the budget while
waiting for more can never wait for each other forever.
"""

from __future__ import annotations

import asyncio
import time

from hmff_edge.serve.limits import HTTPError


class MemoryBudget:
    """``total`` bytes shared by every request; create it on the server's event loop."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._cond = asyncio.Condition()

    def reservation(self, deadline: float) -> Reservation:
        """A new, empty reservation whose waits end at ``deadline`` (``time.monotonic``)."""
        return Reservation(self, deadline)


class Reservation:
    """The bytes one request holds; use as ``async with budget.reservation(t) as r``."""

    def __init__(self, budget: MemoryBudget, deadline: float) -> None:
        self.budget = budget
        self.deadline = deadline
        self.held = 0

    async def grow(self, n: int) -> None:
        """Hold ``n`` more bytes, waiting (until the deadline) for others to release."""
        b = self.budget
        if n <= 0:
            return
        if self.held + n > b.total:
            raise HTTPError(413, f"the request needs more than the server's memory budget of "
                                 f"{b.total} bytes (--max-buffered-mb); send a smaller request "
                                 "or binary tensors", close=True)
        if b.used + n > b.total:
            try:
                async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                    async with b._cond:
                        await b._cond.wait_for(lambda: b.used + n <= b.total)
            except TimeoutError:
                raise HTTPError(503, f"the server's memory budget of {b.total} bytes is in use "
                                     "by other requests; retry", close=True,
                                headers={"Retry-After": "1"}) from None
        b.used += n
        self.held += n

    async def shrink(self, n: int) -> None:
        """Give back ``n`` bytes (at most what is held)."""
        n = min(n, self.held)
        if n <= 0:
            return
        self.held -= n
        b = self.budget
        b.used -= n
        async with b._cond:
            b._cond.notify_all()

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shrink(self.held)
