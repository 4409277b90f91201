"""Edges of the real-time plug-in found by a hunt: a budget covers the time to the response head,
never a started stream; a handler that swallows the deadline's cancellation never answers in its
fallback's place; Server-Timing is on the server's own error answers too."""
from __future__ import annotations

import asyncio

from aioserve import App, StreamResponse

from tests.support import raw_connection, running, wait_until


async def test_a_stream_started_in_time_is_neither_late_nor_in_flight():
    app = App(deadline=0.05)
    app.enable_metrics("/metrics")
    streaming, release = asyncio.Event(), asyncio.Event()

    @app.get("/events")
    async def events(request):
        async def pieces():
            yield b"first\n"
            streaming.set()
            await release.wait()  # far past the 50 ms budget
            yield b"last\n"
        return StreamResponse(pieces())

    @app.get("/fast")
    async def fast(request):
        return "fast"

    async with running(app, limit_in_flight=1) as server:
        observer = server.state.observer
        async with raw_connection(server) as stream_conn:
            stream_conn.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(streaming.wait(), 5)
            await asyncio.sleep(0.1)  # the budget would have run out by now
            assert observer.in_flight == 0, "a started stream still holds an in-flight place"
            async with raw_connection(server) as other:  # limit_in_flight=1: not taken by the stream
                response = await other.request("GET", "/fast")
                assert response.status == 200 and response.body == b"fast"
            release.set()
            response = await stream_conn.read_response()
            assert response.status == 200 and response.body == b"first\nlast\n"
        assert observer.metrics.counters["deadline_late"] == 0


async def test_a_handler_that_swallows_the_cancellation_does_not_answer_in_the_fallbacks_place():
    swallowed = asyncio.Event()

    async def fallback(request):
        await asyncio.sleep(0.05)  # the handler returns first, right after swallowing
        return {"fallback": True}

    app = App()

    @app.get("/swallow", deadline=0.05, fallback=fallback)
    async def swallow(request):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            swallowed.set()
        return {"handler": "late"}

    async with running(app) as server:
        async with raw_connection(server) as conn:
            response = await conn.request("GET", "/swallow")
            assert swallowed.is_set()
            assert response.status == 200 and response.body == b'{"fallback":true}', response.body
            await conn.assert_silent(0.1)  # and no second answer


async def test_server_timing_is_on_the_servers_own_errors():
    app = App(server_timing=True)

    @app.post("/upload", max_body_size=10)
    async def upload(request):
        return {"size": len(await request.body())}

    async with running(app) as server:
        async with raw_connection(server) as conn:
            response = await conn.request("POST", "/upload", headers={"Content-Length": "100"})
            assert response.status == 413
            timing = response.header("server-timing")
            assert timing is not None and timing.startswith("app;dur="), response.headers
            await wait_until(lambda: server.connections == 0, timeout=5)  # a 413 closes
