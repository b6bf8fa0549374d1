"""Progress lines for long steps: count, rate and time left."""

import time
from collections.abc import Callable


class Progress:
    """Call ``advance(n)`` as work completes; logs at most every ``every_s`` seconds."""

    def __init__(self, label: str, total: int, log: Callable[[str], None], every_s: float = 5.0):
        self.label, self.total, self.log, self.every_s = label, total, log, every_s
        self.done = 0
        self.started = self._last = time.perf_counter()

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        percent = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"{self.label}: {self.done:,}/{self.total:,} ({percent:.0f}%), "
                f"{rate:,.1f}/s, ~{left:,.0f} s left")

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self.log(self.line())

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def summary(self) -> str:
        return f"{self.label}: {self.done:,} in {self.elapsed_s():,.1f} s ({self.rate:,.1f}/s)"
