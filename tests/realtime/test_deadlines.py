"""Deadlines: expiry cancels the handler and answers fast; fallbacks; the client's header."""
from __future__ import annotations

import asyncio

import pytest

from aioserve import App, HTTPError
from tests.support import RawConnection, raw_get, request_bytes, running, wait_until
from tests.support.apps import burn_then_quick_app

MARGIN = 0.5  # loose: CI machines are noisy; the point is "about the deadline", not "after the work"
EARLY = 0.002  # uvloop's timers and clock tick in whole milliseconds, so a timer may fire just under its delay


async def test_expiry_cancels_handler_and_answers_503():
    app = App()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @app.get("/slow", deadline=0.05)
    async def slow(request):
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only the deadline ends this
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with running(app) as server:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reply = await raw_get(server.port, "/slow")
        elapsed = loop.time() - t0
        assert reply.status == 503
        assert reply.header("retry-after") == "1"
        assert started.is_set()
        await asyncio.wait_for(cancelled.wait(), 2)
        assert 0.05 - EARLY <= elapsed < 0.05 + MARGIN
        assert server.state.observer.in_flight == 0


async def test_connection_stays_usable_after_expiry():
    app = App(deadline=0.03)

    @app.get("/slow")
    async def slow(request):
        await asyncio.sleep(10)

    @app.get("/fast")
    async def fast(request):
        return "ok"

    async with running(app) as server:
        client = await RawConnection.open(server.port)
        try:
            assert (await client.request("GET", "/slow")).status == 503
            reply = await client.request("GET", "/fast")
            assert (reply.status, reply.body) == (200, b"ok")
        finally:
            await client.close()


async def test_fallback_answer_is_used():
    app = App()

    async def default_score(request, user: int):
        return {"user": user, "score": 0.5, "fallback": True}

    @app.get("/score/{user:int}", deadline=0.03, fallback=default_score)
    async def score(request, user: int):
        await asyncio.sleep(10)
        return {"user": user, "score": 0.9}

    async with running(app) as server:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reply = await raw_get(server.port, "/score/7")
        assert loop.time() - t0 < 0.03 + MARGIN
        assert reply.status == 200
        assert reply.body == b'{"user":7,"score":0.5,"fallback":true}'


async def test_failing_fallback_gives_an_error_answer():
    app = App()

    async def broken(request):
        raise HTTPError(503, "no default today")

    @app.get("/x", deadline=0.02, fallback=broken)
    async def x(request):
        await asyncio.sleep(10)

    async with running(app) as server:
        reply = await raw_get(server.port, "/x")
        assert (reply.status, reply.body) == (503, b"no default today")


async def test_fast_handler_is_untouched_and_sees_its_budget():
    app = App(deadline=0.5)

    @app.get("/left")
    async def left(request):
        return {"left": request.time_left(), "deadline": request.deadline,
                "now": asyncio.get_running_loop().time()}

    async with running(app) as server:
        reply = await raw_get(server.port, "/left")
        import orjson

        data = orjson.loads(reply.body)
        assert reply.status == 200
        assert 0.3 < data["left"] <= 0.5 + 1e-3
        assert data["deadline"] - data["now"] == pytest.approx(data["left"], abs=0.05)


@pytest.mark.parametrize("asked_ms, expect_max", [("40", 0.04), ("5000", 1.0), ("junk", 1.0), ("0", 1.0)])
async def test_header_tightens_never_loosens(asked_ms, expect_max):
    app = App()

    @app.get("/left", deadline=1.0)
    async def left(request):
        return {"left": request.time_left()}

    async with running(app) as server:
        reply = await raw_get(server.port, "/left", headers={"X-Deadline-Ms": asked_ms})
        import orjson

        left = orjson.loads(reply.body)["left"]
        assert left <= expect_max + 1e-3
        assert left > expect_max / 2


async def test_tighter_header_deadline_expires_early_and_looser_does_not_extend():
    app = App()

    @app.get("/slow", deadline=0.3)
    async def slow(request):
        await asyncio.sleep(10)

    async with running(app) as server:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert (await raw_get(server.port, "/slow", headers={"X-Deadline-Ms": "20"})).status == 503
        assert loop.time() - t0 < 0.3  # the header's 20 ms, not the route's 300 ms
        t0 = loop.time()
        assert (await raw_get(server.port, "/slow", headers={"X-Deadline-Ms": "60000"})).status == 503
        assert loop.time() - t0 < 0.3 + MARGIN  # the route's bound holds


async def test_header_name_is_configurable_and_ignored_without_a_route_deadline():
    app = App(deadline_header="Grpc-Budget")

    @app.get("/a", deadline=1.0)
    async def a(request):
        return {"left": request.time_left()}

    @app.get("/b")
    async def b(request):
        return {"left": request.time_left()}

    async with running(app) as server:
        import orjson

        assert orjson.loads((await raw_get(server.port, "/a", headers={"Grpc-Budget": "50"})).body)["left"] <= 0.05 + 1e-3
        assert orjson.loads((await raw_get(server.port, "/a", headers={"X-Deadline-Ms": "50"})).body)["left"] > 0.5
        assert orjson.loads((await raw_get(server.port, "/b", headers={"Grpc-Budget": "50"})).body)["left"] is None


async def test_app_deadline_applies_and_route_can_opt_out():
    app = App(deadline=0.03)

    @app.get("/default")
    async def default(request):
        await asyncio.sleep(0.3)
        return "late"

    @app.get("/none", deadline=None)
    async def none(request):
        await asyncio.sleep(0.1)
        return {"left": request.time_left()}

    async with running(app) as server:
        assert (await raw_get(server.port, "/default")).status == 503
        reply = await raw_get(server.port, "/none")
        assert (reply.status, reply.body) == (200, b'{"left":null}')


async def test_handlers_own_cancelled_error_is_a_500_not_a_hang():
    app = App()

    @app.get("/oops")
    async def oops(request):
        raise asyncio.CancelledError()

    async with running(app) as server:
        client = await RawConnection.open(server.port)
        try:
            assert (await client.request("GET", "/oops")).status == 500
            assert (await client.request("GET", "/oops")).status == 500  # the connection is still served
        finally:
            await client.close()


async def test_deadline_counts_time_queued_in_a_pipeline():
    """The budget starts at the parsed head: a request read behind others has its clock running."""
    app = App()
    gate = asyncio.Event()

    @app.get("/first")
    async def first(request):
        await gate.wait()
        return "first"

    @app.get("/second", deadline=0.05)
    async def second(request):
        await gate.wait()
        return "second"

    async with running(app) as server:
        client = await RawConnection.open(server.port)
        try:
            client.write(request_bytes("GET", "/first"))
            client.write(request_bytes("GET", "/second"))
            await asyncio.sleep(0.1)  # past /second's deadline while /first holds the pipeline
            gate.set()
            assert (await client.read_response()).body == b"first"
            assert (await client.read_response()).status == 503
        finally:
            await client.close()


async def test_no_realtime_machinery_without_features():
    app = App()

    @app.get("/")
    async def index(request):
        return {"deadline": request.deadline, "left": request.time_left()}

    async with running(app) as server:
        assert server.state.observer is None
        reply = await raw_get(server.port, "/")
        assert reply.body == b'{"deadline":null,"left":null}'


def test_route_validation():
    app = App()
    with pytest.raises(ValueError):
        app.get("/x", deadline=0)(_h)
    with pytest.raises(TypeError):
        app.get("/y", deadline=1, fallback=lambda r: None)(_h)
    with pytest.raises(ValueError):
        App(deadline=-1)


async def _h(request):
    return "x"


async def test_handler_whose_budget_ran_out_while_queued_does_not_run():
    """Tasks made ready in one loop iteration run back to back; no timer fires in between. A task
    that starts after its deadline answers 503 without running its handler (its CPU is saved)."""
    # Both handlers await, so each runs in a task (a handler with no await runs inline, as its head
    # is parsed, and would be answered before /burn's task even starts).
    app, ran = burn_then_quick_app()

    async with running(app) as server:
        client = await RawConnection.open(server.port)
        try:
            client.write(request_bytes("GET", "/burn"))
            client.write(request_bytes("GET", "/quick"))  # one write: both heads parsed in the same data_received
            assert (await client.read_response()).body == b"burnt"
            assert (await client.read_response()).status == 503
            assert ran == []
            assert server.state.observer.in_flight == 0
        finally:
            await client.close()


async def test_client_gone_mid_handler_takes_its_deadline_with_it():
    """A client that disconnects mid-handler leaves nobody to answer: its budget's timer must be
    disarmed, not fire later and cancel the handler, which finishes its own work."""
    app = App()
    entered, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    @app.get("/work", deadline=0.5)
    async def work(request):
        entered.set()
        try:
            await asyncio.wait_for(release.wait(), 5)  # the server has seen the client go
            await asyncio.sleep(0.7)  # the handler's own work, running past the 0.5 s budget
            outcome.append("completed")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        finally:
            finished.set()
        return "done"

    async with running(app) as server:
        loop = asyncio.get_running_loop()
        client = await RawConnection.open(server.port)
        t0 = loop.time()
        client.write(request_bytes("GET", "/work"))
        await asyncio.wait_for(entered.wait(), 5)
        client.reset()
        await wait_until(lambda: server.connections == 0, timeout=3, message="the server never saw the client go")
        assert loop.time() - t0 < 0.5, "the disconnect was noticed only after the budget ran out"
        release.set()
        await asyncio.wait_for(finished.wait(), 5)
        assert outcome == ["completed"]
