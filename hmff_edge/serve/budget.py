"""One memory budget for everything a request makes the server hold.

A request's :class:`Reservation` grows as its body arrives (chunk by chunk, so a stalled
upload holds only what it sent, never its declared length), when its body is decompressed,
by the estimated cost of parsing its JSON, and by its decoded tensor while that waits in the
queue and runs; it shrinks as each stage frees its input and closes with the response.
When the budget is spent, growing waits (the kernel holds the unread bytes: uvicorn stops
reading a connection whose body is not consumed) up to a deadline, then the request is
refused with 503 and ``Retry-After``. When every byte in use is held by requests that are
themselves waiting for more (large uploads arriving together), none could ever proceed: the
youngest of them is refused at once (503) so that the older ones can finish ("wait-die").
"""

from __future__ import annotations

import asyncio
import itertools
import time

from hmff_edge.serve.limits import HTTPError


class MemoryBudget:
    """``total`` bytes shared by every request; create it on the server's event loop."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._cond = asyncio.Condition()
        self._waiting: set[Reservation] = set()
        self._ages = itertools.count()

    def _stuck(self) -> bool:
        """Every byte in use is held by a waiting request: nobody will release any."""
        return bool(self._waiting) and sum(r.held for r in self._waiting) >= self.used

    def reservation(self, deadline: float) -> Reservation:
        """A new, empty reservation whose waits end at ``deadline`` (``time.monotonic``)."""
        return Reservation(self, deadline)


class Reservation:
    """The bytes one request holds; use as ``async with budget.reservation(t) as r``."""

    def __init__(self, budget: MemoryBudget, deadline: float) -> None:
        self.budget = budget
        self.deadline = deadline
        self.held = 0
        self.age = next(budget._ages)

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
            await self._wait(n)
        b.used += n
        self.held += n

    async def _wait(self, n: int) -> None:
        b = self.budget
        busy = HTTPError(503, f"the server's memory budget of {b.total} bytes is in use by "
                              "other requests; retry", close=True, headers={"Retry-After": "1"})
        b._waiting.add(self)
        try:
            async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                async with b._cond:
                    b._cond.notify_all()  # the others re-check whether they are all stuck
                    while b.used + n > b.total:
                        if b._stuck() and self.age == max(r.age for r in b._waiting):
                            raise busy
                        await b._cond.wait()
        except TimeoutError:
            raise busy from None
        finally:
            b._waiting.discard(self)

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
