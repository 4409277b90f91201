"""Admission control over a real server on a quiet loop: idle time is never taken for queueing.

These tests must let wall time pass: what they check is how the controller treats time in which the
loop had nothing to do, so each pause is longer than the budget (a shorter one would hide the bug).
"""
from __future__ import annotations

import asyncio
import time

import pytest

from aioserve import App
from tests.support import RawConnection, raw_get, request_bytes, running

BUDGET = 0.05
PAUSE = 0.08  # longer than the budget: a gap the old controller charged as unseen wait


def quiet_app() -> App:
    app = App(deadline=BUDGET)
    app.enable_metrics("/metrics")

    @app.get("/score")
    async def score(request):
        return "s"

    @app.get("/report", deadline=None)
    async def report(request):
        return "r"

    @app.get("/health", shed=False)
    async def health(request):
        return "ok"

    @app.get("/slow", deadline=0.5)
    async def slow(request):
        time.sleep(0.025)  # holds the loop, as CPU work does
        return "slow"

    return app


@pytest.mark.parametrize("trigger", ["/metrics", "/report", "/health"])
async def test_a_request_that_skips_admission_does_not_lock_a_quiet_route_out(trigger):
    """/score, a pause, one request admission does not judge (the scrape, a route without a deadline,
    a health check), then /score now and then: the server is idle, every /score is answered."""
    async with running(quiet_app()) as server:
        assert (await raw_get(server.port, "/score")).status == 200
        await asyncio.sleep(PAUSE)
        assert (await raw_get(server.port, trigger)).status == 200
        statuses = []
        for _ in range(5):
            await asyncio.sleep(PAUSE)
            statuses.append((await raw_get(server.port, "/score")).status)
        snap = server.state.observer.admission.snapshot()
    assert statuses == [200] * 5
    assert snap["shed"] == {"admission": 0, "share": 0}


async def test_after_a_refusal_a_quiet_route_is_admitted_again():
    """A /score read right after 100 ms of handlers is refused (it may have waited that long, as far as
    the server can tell). Then the loop is idle and /score comes now and then: every one is answered."""
    async with running(quiet_app()) as server:
        assert (await raw_get(server.port, "/score")).status == 200
        async with await RawConnection.open(server.port) as slow, await RawConnection.open(server.port) as conn:
            slow.write(b"".join(request_bytes("GET", "/slow") for _ in range(4)))  # 100 ms, in one read
            # Wall time on purpose: a timer due in 10 ms fires only once the four handlers let go of
            # the loop, so /score is written (and read) right after them, with no idle gap between.
            await asyncio.sleep(0.01)
            first = await conn.request("GET", "/score")
            assert [(await slow.read_response()).status for _ in range(4)] == [200] * 4
            assert first.status == 503  # refused on the unseen wait the 100 ms of handlers may have caused
            statuses = []
            for _ in range(5):
                await asyncio.sleep(PAUSE)
                statuses.append((await conn.request("GET", "/score")).status)
    assert statuses == [200] * 5


async def test_the_controller_knows_how_the_loop_orders_polls_and_handlers():
    """asyncio's own loop polls before it runs the ready handlers and reads after them (so a head can
    wait two busy stretches); uvloop polls and reads at once."""
    async with running(quiet_app()) as server:
        loop = asyncio.get_running_loop()
        expected = not type(loop).__module__.startswith("uvloop")
        assert server.state.observer.admission.poll_before_ready is expected
        assert isinstance(loop, asyncio.BaseEventLoop) is expected
