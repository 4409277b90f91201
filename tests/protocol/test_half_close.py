"""A client that half-closes (sends EOF) after its requests still gets every answer, then the close."""
from __future__ import annotations

import asyncio

from aioserve import App

from tests.support import HOST, running, wait_until


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)  # until the server closes


async def test_half_close_after_pipelined_requests_answers_all_then_closes():
    app = App()
    release = asyncio.Event()

    @app.get("/slow")
    async def slow(request):
        await release.wait()
        return "slow"

    @app.get("/fast")
    async def fast(request):
        return "fast"

    async with running(app) as server:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        writer.write_eof()
        await asyncio.sleep(0)  # let the server see the EOF before the slow handler finishes
        asyncio.get_running_loop().call_later(0.05, release.set)
        data = await _read_all(reader)  # returns only because the server closed the connection
        writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"slow") < data.index(b"fast")
    # The last answer was ready before the EOF, so it may say keep-alive; the close itself is what
    # tells the client (reader.read() above returned only because the server closed).


async def test_eof_with_nothing_outstanding_closes_at_once():
    app = App()

    @app.get("/")
    async def index(request):
        return "ok"

    async with running(app) as server:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        writer.write_eof()
        assert await _read_all(reader) == b""
        writer.close()
        await wait_until(lambda: server.connections == 0, timeout=5)
