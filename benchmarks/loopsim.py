"""A simulated one-worker server, to prove ``aioserve.admission`` without wall-clock timing.

Two models of the same single FIFO server, both driven by a fake clock:

* ``batched=True`` (default), the event loop as aioserve runs it with a real-time observer: each loop
  iteration reads every head that has arrived (parse cost each; a refused one also costs its 503), then
  runs the admitted handlers in arrival order, one after the other. Heads that arrive while handlers
  run wait unseen in the socket buffer until the next iteration: the part of the wait admission cannot
  observe, which is what makes overload hard.
* ``batched=False``, a textbook FIFO queue: a head is parsed the moment it arrives, the server starts
  the oldest admitted handler whenever it is free.

A handler whose budget ran out before it started is not run (503, as ``deadlines.expired_before_start``
does); one that started runs to the end (CPU cannot be interrupted) and may answer late. Latency is
counted from arrival, as the open-loop client counts it from when a request was due.
"""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

PARSE = 20e-6  # seconds of loop time to read and route one head
SHED = 20e-6  # ... to write one 503
OVERHEAD = 30e-6  # ... per answered request beyond the handler (task, response write)


@dataclass(frozen=True)
class Arrival:
    t: float
    key: str
    budget: float
    service: float


@dataclass
class RouteResult:
    sent: int = 0
    ok: list[float] = field(default_factory=list)  # latencies of answered requests (seconds)
    shed: int = 0  # refused at the door
    expired: int = 0  # admitted, budget spent before the handler started

    def summary(self, budget: float, duration: float) -> dict:
        ok = sorted(self.ok)
        good = sum(1 for x in ok if x <= budget)

        def pct(q: float) -> float | None:
            return ok[min(len(ok) - 1, int(q * len(ok)))] * 1000 if ok else None

        return {"sent": self.sent, "ok": len(ok), "ok_in_deadline": good, "goodput": good / duration,
                "shed": self.shed, "expired": self.expired, "late": len(ok) - good,
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": ok[-1] * 1000 if ok else None}


class AdmitAll:
    """The controller of ``App(deadline=...)`` without admission: every head is admitted."""

    def admit(self, key, budget, now):  # noqa: D102
        return True

    def started(self, key, queued, now):  # noqa: D102
        pass

    def finished(self, key, service, now):  # noqa: D102
        pass

    def abandoned(self, key, now, started=True):  # noqa: D102
        pass


def simulate(arrivals: list[Arrival], controller, *, batched: bool = True, parse: float = PARSE,
             shed: float = SHED, overhead: float = OVERHEAD) -> dict[str, RouteResult]:
    """Run ``arrivals`` (sorted by time) through one server guarded by ``controller``."""
    results: dict[str, RouteResult] = {}
    for a in arrivals:
        results.setdefault(a.key, RouteResult()).sent += 1
    if batched:
        _batched(arrivals, controller, results, parse, shed, overhead)
    else:
        _fifo(arrivals, controller, results, parse, shed, overhead)
    return results


def _run(a: Arrival, parsed: float, t: float, controller, results, shed: float, overhead: float) -> float:
    """Start (or expire) one admitted request at ``t``; returns the time the loop is free again."""
    res = results[a.key]
    if t >= parsed + a.budget:
        controller.abandoned(a.key, t, started=False)
        res.expired += 1
        return t + shed
    controller.started(a.key, t - parsed, t)
    t += a.service
    controller.finished(a.key, a.service, t)
    t += overhead
    res.ok.append(t - a.t)
    return t


def _batched(arrivals, controller, results, parse, shed, overhead) -> None:
    t = 0.0
    i, n = 0, len(arrivals)
    while i < n:
        if arrivals[i].t > t:
            t = arrivals[i].t  # idle: the loop wakes when a head arrives
        batch = []
        while i < n and arrivals[i].t <= t:
            a = arrivals[i]
            i += 1
            t += parse
            if controller.admit(a.key, a.budget, t):
                batch.append((a, t))
            else:
                results[a.key].shed += 1
                t += shed
        for a, parsed in batch:
            t = _run(a, parsed, t, controller, results, shed, overhead)


def _fifo(arrivals, controller, results, parse, shed, overhead) -> None:
    queue: deque[tuple[Arrival, float]] = deque()
    free = 0.0  # when the server finishes its current handler
    i, n = 0, len(arrivals)
    while i < n or queue:
        # the next event: an arrival, or the server taking the oldest admitted request
        if queue and (i >= n or max(free, queue[0][1]) <= arrivals[i].t):
            a, parsed = queue.popleft()
            free = _run(a, parsed, max(free, parsed), controller, results, shed, overhead)
            continue
        a = arrivals[i]
        i += 1
        parsed = a.t + parse
        if controller.admit(a.key, a.budget, parsed):
            queue.append((a, parsed))
        else:
            results[a.key].shed += 1


# -- workloads ---------------------------------------------------------------------------------------
def even(key: str, rate: float, duration: float, budget: float, service: Callable[[], float],
         start: float = 0.0) -> list[Arrival]:
    """Open loop on a timetable: ``rate`` per second, evenly spaced, as benchmarks/overload.py sends."""
    step = 1.0 / rate
    return [Arrival(start + k * step, key, budget, service()) for k in range(int(rate * duration))]


def poisson(key: str, rate: float, duration: float, budget: float, service: Callable[[], float],
            rng: random.Random, start: float = 0.0) -> list[Arrival]:
    out, t = [], start
    while True:
        t += rng.expovariate(rate)
        if t >= start + duration:
            return out
        out.append(Arrival(t, key, budget, service()))


def merge(*streams: Iterable[Arrival]) -> list[Arrival]:
    return sorted((a for s in streams for a in s), key=lambda a: a.t)


def capacity(mean_service: float, parse: float = PARSE, overhead: float = OVERHEAD) -> float:
    """Answers per second of the simulated server for one route at full load."""
    return 1.0 / (mean_service + parse + overhead)


def constant(x: float) -> Callable[[], float]:
    return lambda: x


def uniform(lo: float, hi: float, rng: random.Random) -> Callable[[], float]:
    return lambda: rng.uniform(lo, hi)


def fmt(v, spec: str = "{:.1f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else spec.format(v)
