"""Admission control on asyncio's order of events, driven by a fake clock.

``benchmarks/loopsim.py`` models libuv (uvloop): each iteration polls and reads the heads at once, then
runs the handlers they made ready. asyncio's ``BaseEventLoop._run_once`` polls the selector first,
runs the handlers made ready by the previous iteration's reads, and only then reads the sockets the
poll found: a head that arrives just after a poll waits through two handler stretches before it is
read. ``Admission(poll_before_ready=True)`` charges for that (``realtime.py`` sets it on asyncio's loops).
"""
from __future__ import annotations

import pytest

from aioserve.admission import Admission
from benchmarks import loopsim as ls

DURATION = 5.0
BUDGET = 0.050
MS = 1e-3


def asyncio_order(arrivals, controller, parse=ls.PARSE, shed=ls.SHED, overhead=ls.OVERHEAD):
    """``arrivals`` through one server whose loop runs as asyncio's: poll, ready handlers, reads."""
    results = {}
    for a in arrivals:
        results.setdefault(a.key, ls.RouteResult()).sent += 1
    t = 0.0
    i, n = 0, len(arrivals)
    ready = []  # admitted heads of the previous iteration's reads: their tasks run next
    while i < n or ready:
        if not ready and arrivals[i].t > t:
            t = arrivals[i].t  # nothing to run: the poll blocks until a head arrives
        polled = i
        while polled < n and arrivals[polled].t <= t:  # what the poll finds, read after the handlers
            polled += 1
        for a, parsed in ready:
            res = results[a.key]
            if t >= parsed + a.budget:  # out of budget before it started: 503, the handler never runs
                controller.abandoned(a.key, t, started=False)
                res.expired += 1
                t += shed
                continue
            controller.started(a.key, t - parsed, t)
            t += a.service
            controller.finished(a.key, a.service, t)
            t += overhead
            res.ok.append(t - a.t)
        ready = []
        for a in arrivals[i:polled]:
            t += parse
            if controller.admit(a.key, a.budget, t):
                ready.append((a, t))
            else:
                results[a.key].shed += 1
                t += shed
        i = polled
    return results


def run(load: float, controller) -> tuple[dict, float]:
    cap = ls.capacity(1 * MS)
    arrivals = ls.even("/work", cap * load, DURATION, BUDGET, ls.constant(1 * MS))
    return asyncio_order(arrivals, controller)["/work"].summary(BUDGET, DURATION), cap


@pytest.mark.parametrize("load", [0.5, 1.0])
def test_sheds_nothing_under_capacity(load):
    r, cap = run(load, Admission(poll_before_ready=True))
    assert r["shed"] == 0 and r["expired"] == 0 and r["late"] == 0


@pytest.mark.parametrize("load", [2.0, 4.0])
def test_overload_keeps_admitted_latency_in_budget(load):
    r, cap = run(load, Admission(poll_before_ready=True))
    assert r["shed"] > 0
    assert r["p99_ms"] <= BUDGET * 1000
    assert r["late"] <= 0.01 * r["ok"]
    assert r["goodput"] >= 0.85 * cap


@pytest.mark.parametrize("load", [2.0, 4.0])
def test_charging_one_stretch_on_asyncio_answers_late(load):
    """The cause of late answers on asyncio: the libuv estimate (one stretch) admits heads that
    already waited two; half of the answers or more are late."""
    r, cap = run(load, Admission())
    assert r["late"] >= 0.3 * r["ok"]
    assert r["p99_ms"] > BUDGET * 1000
