"""Minimum data rates (``min_request_body_rate``, ``min_response_rate``, ``min_rate_grace_period``):
a body dribbled, or a response read, slower than the rate is cut once the grace period is over, while
time the server is not waiting on the client does not count. Real sockets, small rates and graces."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from aioserve import App, Response, StreamResponse
from tests.support import HostileClient, Timed, running, wait_until


def rates_app() -> tuple[App, dict]:
    seen = {"closed": 0, "sizes": []}
    app = App()

    @app.post("/upload", max_body_size=None)
    async def upload(request):
        size = len(await request.body())
        seen["sizes"].append(size)
        return {"size": size}

    @app.post("/later", max_body_size=None)
    async def later(request):
        await asyncio.sleep(1.0)  # the application is busy: not the client's fault
        return {"size": len(await request.body())}

    @app.get("/stream")
    async def endless(request):
        async def produce():
            try:
                for _ in range(100_000):
                    yield b"x" * 65536
            finally:
                seen["closed"] += 1
        return StreamResponse(produce())

    return app, seen


def _head(path: str, length: int, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (path.encode(), length, extra)


async def test_a_body_slower_than_the_rate_gets_408_after_the_grace_period():
    app, seen = rates_app()
    async with running(app, min_request_body_rate=1000, min_rate_grace_period=0.5, timeout_body=30) as server:
        client = await HostileClient.open(server.port)
        timer = Timed()
        client.write(_head("/upload", 10_000))
        dribbler = asyncio.ensure_future(client.dribble(b"a" * 10_000, interval=0.1, piece=10))  # 100 B/s
        try:
            [response] = await client.responses(1, timeout=5)
            assert response.status == 408, response.body
            assert "close" in (response.header("connection") or "")
            assert await client.closed(timeout=2)
            assert 0.4 <= timer.elapsed < 2.0, timer.elapsed  # grace 0.5 s; the inactivity timeout is 30 s
            assert seen["sizes"] == []
        finally:
            dribbler.cancel()
            client.transport.abort()


async def test_a_body_at_the_rate_is_not_cut():
    app, seen = rates_app()
    async with running(app, min_request_body_rate=200, min_rate_grace_period=0.3) as server:
        client = await HostileClient.open(server.port)
        client.write(_head("/upload", 800))
        sent = await client.dribble(b"a" * 800, interval=0.1, piece=40)  # 400 B/s for 2 s
        assert sent == 20
        [response] = await client.responses(1, timeout=5)
        assert (response.status, response.body) == (200, b'{"size":800}')
        client.transport.abort()


async def test_time_the_client_waits_for_100_continue_does_not_count():
    """The handler sleeps 1 s before it asks for the body; the client waits for 100 Continue, as it must."""
    app, _ = rates_app()
    async with running(app, min_request_body_rate=1000, min_rate_grace_period=0.3) as server:
        client = await HostileClient.open(server.port)
        client.write(_head("/later", 5, b"Expect: 100-continue\r\n"))
        await wait_until(lambda: b"100 Continue" in client.sink.data, timeout=5)
        client.write(b"hello")
        responses = await client.responses(2, timeout=5)
        assert [r.status for r in responses] == [100, 200] or responses[-1].status == 200, responses
        assert responses[-1].body == b'{"size":5}'
        client.transport.abort()


async def test_rate_zero_turns_the_body_rate_off():
    app, _ = rates_app()
    async with running(app, min_request_body_rate=0, min_rate_grace_period=0.2, timeout_body=30) as server:
        client = await HostileClient.open(server.port)
        client.write(_head("/upload", 20))
        sent = await client.dribble(b"a" * 20, interval=0.05, piece=1)  # 20 B/s for 1 s
        assert sent == 20
        [response] = await client.responses(1, timeout=5)
        assert response.status == 200
        client.transport.abort()


async def test_a_client_reading_slower_than_the_rate_is_dropped_and_the_generator_closed():
    app, seen = rates_app()
    async with running(app, min_response_rate=100_000, min_rate_grace_period=0.5, timeout_write=30) as server:
        client = await HostileClient.open(server.port, rcvbuf=4096)
        client.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_until(lambda: len(client.sink.data) > 0, timeout=5)
        client.pause_reading()  # reads nothing from now on
        timer = Timed()
        # (a client that does not read does not see the close either: watch the server's side)
        # What it read before pausing counts toward the rate (it was taken, from the kernel's queue too),
        # so the average falls below 100 kB/s a few seconds in; timeout_write (30 s) is far later.
        await wait_until(lambda: seen["closed"] == 1, timeout=12, message="the stream's generator was not closed")
        assert timer.elapsed < 12.0, timer.elapsed  # timeout_write is 30 s: the rate cut it
        client.resume_reading()
        assert await client.closed(timeout=5), "the connection stayed open"


async def test_a_client_reading_fast_enough_is_not_dropped():
    app, seen = rates_app()
    async with running(app, min_response_rate=1000, min_rate_grace_period=0.2) as server:
        client = await HostileClient.open(server.port, rcvbuf=65536)
        client.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_until(lambda: len(client.sink.data) > 4_000_000, timeout=10)
        assert not client.is_closed
        client.transport.abort()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the client's TCP state (TCP_INFO)")
async def test_a_slow_reader_is_reset_so_the_kernel_stops_sending_to_it():
    """A plain close would leave megabytes in the server's socket, sent on by the kernel to a client
    that reads a little at a time for as long as it likes; a reset frees them at once."""
    app = App()
    body = b"r" * (8 * 1024 * 1024)

    @app.get("/big")
    async def big(request):
        return Response(body)

    async with running(app, min_response_rate=100_000, min_rate_grace_period=0.3) as server:
        client = await HostileClient.open(server.port, rcvbuf=4096)
        client.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_until(lambda: len(client.sink.data) > 0, timeout=5)
        client.pause_reading()  # its receive buffer stays full: the server's send buffer cannot drain
        sock = client.transport.get_extra_info("socket")
        tcp_close = 7  # tcpi_state after a reset (linux/tcp_states.h); a FIN would queue behind the data
        await wait_until(lambda: sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == tcp_close,
                         timeout=5, message="the slow reader was not reset")
        client.transport.abort()
