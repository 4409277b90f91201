"""A timeout or a minimum rate judges the client only for waits that are the client's.

Found by a hunt: a client reading a large answer steadily was dropped because the server watched only
its transport's buffer, which stands still while the kernel's send queue drains to the client; an upload
got 408 while the server itself had stopped reading it; and the server's own error answers (413, the
shedding 503) skipped the app's finishers, so a browser saw no CORS headers on them.
"""
from __future__ import annotations

import asyncio
import socket

from aioserve import App, StreamResponse

from tests.support import HOST, HostileClient, raw_connection, running, wait_until

CHUNK = b"y" * 65536


def _streaming_app() -> tuple[App, dict]:
    seen = {"closed": 0}
    app = App()

    @app.get("/big")
    async def big(request):
        async def produce():
            try:
                for _ in range(2000):  # 128 MiB at most: far more than the test reads
                    yield CHUNK
            finally:
                seen["closed"] += 1
        return StreamResponse(produce())

    return app, seen


async def test_a_client_reading_steadily_from_a_full_kernel_queue_is_not_dropped():
    app, seen = _streaming_app()
    # timeout_write 1 s and a rate of 20 kB/s: a reader taking ~400 kB/s meets both by far, but its
    # reads come out of the kernel's send queue (megabytes), so the transport stays paused for seconds.
    async with running(app, timeout_write=1.0, min_response_rate=20_000, min_rate_grace_period=0.5) as server:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (HOST, server.port)), 5)
            await loop.sock_sendall(sock, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            received = 0
            end = loop.time() + 3.5  # past three write timeouts and the rate's grace
            while loop.time() < end:
                piece = await asyncio.wait_for(loop.sock_recv(sock, 8192), 5)
                assert piece, f"dropped after {received} bytes"
                received += len(piece)
                await asyncio.sleep(0.02)
            assert seen["closed"] == 0, "the stream was cut"
            assert 200_000 < received < 100 * len(CHUNK), received  # it read steadily, and slowly
        finally:
            sock.close()


async def test_a_client_that_stops_reading_is_still_dropped_by_the_write_timeout():
    app, seen = _streaming_app()
    async with running(app, timeout_write=0.5) as server:
        client = await HostileClient.open(server.port, rcvbuf=4096)
        try:
            client.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_until(lambda: len(client.sink.data) > 0, timeout=5)
            client.pause_reading()
            await wait_until(lambda: seen["closed"] == 1, timeout=5, message="the stalled reader was kept")
        finally:
            client.transport.abort()


def _upload_app(release: asyncio.Event) -> App:
    app = App()

    @app.post("/late", max_body_size=None)
    async def late(request):
        await release.wait()  # busy elsewhere before reading: not the client's delay
        return {"size": len(await request.body())}

    return app


async def test_the_body_timeout_does_not_run_while_the_server_is_not_reading():
    release = asyncio.Event()
    body = b"z" * (2 * 1024 * 1024)  # past the connection's unread-body buffer: reading pauses
    async with running(_upload_app(release), timeout_body=0.3) as server:
        async with raw_connection(server) as conn:
            conn.write(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await asyncio.sleep(1.0)  # over three body timeouts with reading paused
            release.set()
            response = await conn.read_response("POST", timeout=10)
            assert response.status == 200, response
            assert response.body == b'{"size":%d}' % len(body)


async def test_the_body_timeout_does_not_run_before_100_continue_asks_for_the_body():
    release = asyncio.Event()
    async with running(_upload_app(release), timeout_body=0.3) as server:
        async with raw_connection(server) as conn:
            await conn.send(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            await conn.assert_silent(1.0)  # no 408 while the client rightly waits for 100 Continue
            release.set()
            interim = await conn.read_response("POST")
            assert interim.status == 100
            await conn.send(b"hello")
            response = await conn.read_final_response("POST")
            assert response.status == 200 and response.body == b'{"size":5}'
        async with raw_connection(server) as conn:  # once asked for, a body that never comes still gets 408
            release.set()
            await conn.send(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
            response = await conn.read_response("POST", timeout=5)
            assert response.status == 408


async def test_the_servers_own_errors_carry_cors_headers():
    app = App()
    gate = asyncio.Event()

    @app.post("/upload", max_body_size=10)
    async def upload(request):
        return {"size": len(await request.body())}

    @app.get("/busy", deadline=5)
    async def busy(request):
        await gate.wait()
        return "done"

    app.add_cors(allow_origins=["https://example.com"])
    origin = {"Origin": "https://example.com"}
    async with running(app, limit_in_flight=1) as server:
        async with raw_connection(server) as conn:  # 413 from the announced length
            response = await conn.request("POST", "/upload", headers={**origin, "Content-Length": "100"})
            assert response.status == 413
            assert response.header("access-control-allow-origin") == "https://example.com"
            assert "Origin" in response.header("vary", "")
        async with raw_connection(server) as first, raw_connection(server) as second:  # 503 from shedding
            first.write(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_until(lambda: server.state.observer is not None and server.state.observer.in_flight == 1,
                             timeout=5)
            response = await second.request("GET", "/busy", headers=origin)
            assert response.status == 503 and response.has("retry-after")
            assert response.header("access-control-allow-origin") == "https://example.com"
            assert response.header("content-length") == str(len(response.body))
            gate.set()
            assert (await first.read_response()).status == 200
