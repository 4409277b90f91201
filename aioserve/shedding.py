"""Load shedding: refuse at once what cannot be finished in time.

A request is *in flight* from the moment its head is parsed until its response is ready (or its
client is gone); idle keep-alive connections are not load. Past ``limit_in_flight``, a new request is
answered ``503 Service Unavailable`` with ``Retry-After`` straight from the parser callback: before its
body is read, before any task exists, in a few microseconds of server time. Routes declared with
``shed=False`` (``/metrics``, health checks) are never refused.

``AdaptiveLimit`` (``App(adaptive_shedding=True)``) sheds earlier when a route's recent p99 exceeds its
deadline. How the limit is chosen (AIMD, once per second, from the latency histograms):

* every second, each route with a deadline and at least ``MIN_SAMPLES`` answers in that second has its
  p99 read from the window histogram (log buckets; the bucket's *lower* bound is used, so a breach is
  certain, not an artefact of bucket width);
* if any route's p99 is over its deadline, the limit becomes 0.7 x min(limit, peak in flight that
  second), never below ``MIN_LIMIT`` (multiplicative decrease);
* if every route's p99 is under half its deadline, the limit grows by 10% (at least 1), up to the
  configured ``limit_in_flight`` or without bound when there is none (additive-ish increase);
* in between, it stays.
"""
from __future__ import annotations

import math
from bisect import bisect_left

from .metrics import BOUNDS, NBUCKETS
from .wire import status_line

SHED_BODY = b"Server overloaded; retry later"
MIN_SAMPLES = 20
MIN_LIMIT = 1


def shed_head(retry_after: int) -> bytes:
    """The 503 head up to (not including) the Date/Server/Connection tail."""
    return b"%sRetry-After: %d\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % (
        status_line(503), retry_after, len(SHED_BODY))


class AdaptiveLimit:
    __slots__ = ("ceiling", "current", "peak", "windows")

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling  # the configured limit (inf if none)
        self.current = ceiling
        self.peak = 0
        self.windows: dict[str, tuple[list[int], float]] = {}

    def record(self, pattern: str, budget: float, seconds: float) -> None:
        window = self.windows.get(pattern)
        if window is None:
            window = self.windows[pattern] = ([0] * NBUCKETS, budget)
        window[0][bisect_left(BOUNDS, seconds)] += 1

    def update(self) -> float:
        """Once a second: choose the limit for the next second from this one; returns it."""
        breach = False
        calm = True
        for counts, budget in self.windows.values():
            total = sum(counts)
            if total >= MIN_SAMPLES:
                p99 = p99_lower_bound(counts, total)
                if p99 > budget:
                    breach = True
                if p99 > budget / 2:
                    calm = False
            for i in range(NBUCKETS):
                counts[i] = 0
        if breach:
            base = min(self.current, self.peak) if self.peak else self.current
            if math.isinf(base):
                base = MIN_LIMIT * 10
            self.current = max(MIN_LIMIT, math.floor(base * 0.7))
        elif calm and self.current < self.ceiling:
            self.current = min(self.ceiling, self.current + max(1, math.floor(self.current * 0.1)))
        self.peak = 0
        return self.current


def p99_lower_bound(counts: list[int], total: int) -> float:
    rank = 0.99 * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return BOUNDS[i - 1] if i > 0 else 0.0
    return BOUNDS[-1]
