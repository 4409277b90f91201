"""WebSocket and the real-time plug-in: the in-flight limit counts a handshake until it is answered,
a deadline covers the handshake and never an open socket, and metrics count open sockets and
messages each way."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from aioserve import App, WebSocket
from tests.support import READ_TIMEOUT, raw_get, running, wait_until


def url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def gated_app(**kw) -> tuple[App, dict[str, asyncio.Event]]:
    """/ws waits for ``gate`` before accepting (``entered`` says it is waiting), then echoes."""
    app = App(**kw)
    events: dict[str, asyncio.Event] = {}

    @app.websocket("/ws")
    async def ws_route(ws: WebSocket):
        events["entered"].set()
        await events["gate"].wait()
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    @app.websocket("/quick")
    async def quick(ws: WebSocket):
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    @app.get("/plain")
    async def plain(request):
        return "ok"

    return app, events


def fresh_events(events: dict[str, asyncio.Event]) -> None:
    events["entered"] = asyncio.Event()
    events["gate"] = asyncio.Event()


async def test_in_flight_limit_counts_a_handshake_until_it_is_accepted():
    app, events = gated_app(limit_in_flight=1)
    fresh_events(events)
    async with running(app, ws_ping_interval=None) as server:
        opening = asyncio.ensure_future(connect(url(server, "/ws"), open_timeout=READ_TIMEOUT))
        await asyncio.wait_for(events["entered"].wait(), READ_TIMEOUT)
        # The handshake is in flight: a plain request, and another handshake, are shed.
        assert (await raw_get(server.port, "/plain")).status == 503
        with pytest.raises(InvalidStatus) as refused:
            await connect(url(server, "/quick"), open_timeout=READ_TIMEOUT)
        assert refused.value.response.status_code == 503
        events["gate"].set()
        ws = await opening
        try:
            # Accepted: the open WebSocket is no longer a request in flight.
            assert (await raw_get(server.port, "/plain")).status == 200
            async with connect(url(server, "/quick")) as other:
                await other.send("b")
                assert await other.recv() == "b"
            await ws.send("a")
            assert await ws.recv() == "a"
        finally:
            await ws.close()


async def test_a_client_that_leaves_during_the_handshake_is_no_longer_in_flight():
    app, events = gated_app(limit_in_flight=1)
    fresh_events(events)
    async with running(app, ws_ping_interval=None) as server:
        opening = asyncio.ensure_future(connect(url(server, "/ws"), open_timeout=READ_TIMEOUT))
        await asyncio.wait_for(events["entered"].wait(), READ_TIMEOUT)
        opening.cancel()  # the client gives up before the 101
        with pytest.raises(asyncio.CancelledError):
            await opening
        await wait_until(lambda: server.connections == 0)
        assert (await raw_get(server.port, "/plain")).status == 200


async def test_deadline_answers_a_slow_handshake_with_503_and_never_cuts_an_open_socket():
    app, events = gated_app(deadline=0.3)
    fresh_events(events)
    async with running(app, ws_ping_interval=None) as server:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url(server, "/ws"), open_timeout=READ_TIMEOUT)  # never accepted in time
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"]
        async with connect(url(server, "/quick")) as ws:
            # Open for longer than the deadline (wall time must pass here: that is the point).
            for i in range(4):
                await asyncio.sleep(0.15)
                await ws.send(str(i))
                assert await asyncio.wait_for(ws.recv(), READ_TIMEOUT) == str(i)


def scrape(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f"[{v}]" for _, v in sorted(sample.labels.items()))
            out[key] = sample.value
    return out


async def test_metrics_count_open_websockets_and_messages_each_way():
    app, events = gated_app()
    app.enable_metrics("/metrics")
    async with running(app, ws_ping_interval=None) as server:
        async def metrics() -> dict[str, float]:
            return scrape((await raw_get(server.port, "/metrics")).body.decode())

        before = await metrics()
        assert before["aioserve_websockets"] == 0
        async with connect(url(server, "/quick")) as a, connect(url(server, "/quick")) as b:
            for i in range(3):
                await a.send(f"a{i}")
                assert await a.recv() == f"a{i}"
            await b.send("b")
            assert await b.recv() == "b"
            during = await metrics()
            assert during["aioserve_websockets"] == 2
            assert during["aioserve_websocket_messages_total[in]"] == 4
            assert during["aioserve_websocket_messages_total[out]"] == 4
        await wait_until(lambda: server.connections == 0)
        after = await metrics()
        assert after["aioserve_websockets"] == 0
        assert after["aioserve_websocket_messages_total[in]"] == 4
        # The handshakes are requests too: two answered 101 on the route.
        assert after['aioserve_requests_total[/quick][1xx]'] == 2
