"""Bounded queues for the costly part of a request: decoding and embedding the query.

At most ``running`` jobs run (worker threads) and ``waiting`` more wait for a thread; a
request beyond that is refused at once with 503 and ``Retry-After`` instead of queueing
without end, so a flood of uploads cannot starve cheap requests (health, more like this) of
time. Uploads whose header declares many pixels to decode go to a narrower lane of their own,
so a flood of heavy pictures cannot crowd out ordinary ones either. The counters live on the
event loop: no lock needed.
"""

from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


class Overloaded(RuntimeError):
    """Too many queries are being decoded and embedded; answered with 503 + Retry-After."""

    retry_after_s = 1


class Admission:
    def __init__(self, running: int, waiting: int):
        self.limit = running + waiting
        self.limiter = anyio.CapacityLimiter(running)
        self.admitted = 0

    async def run(self, function: Callable[[], T], what: str = "queries") -> T:
        """Run ``function`` on a worker thread, or raise Overloaded when the queue is full."""
        if self.admitted >= self.limit:
            raise Overloaded(f"busy: {self.admitted} {what} are being decoded and embedded; "
                             f"retry in {Overloaded.retry_after_s} s")
        self.admitted += 1
        try:
            return await anyio.to_thread.run_sync(function, limiter=self.limiter)
        finally:
            self.admitted -= 1


class Lanes:
    """An ordinary lane and a narrow one for heavy uploads (many pixels to decode)."""

    def __init__(self, running: int, waiting: int, heavy_pixels: int):
        self.heavy_pixels = heavy_pixels
        self.ordinary = Admission(running, waiting)
        self.heavy = Admission(1, max(1, waiting // 4))

    async def run(self, function: Callable[[], T], pixels: int = 0) -> T:
        if pixels > self.heavy_pixels:
            return await self.heavy.run(function, "large images")
        return await self.ordinary.run(function)
