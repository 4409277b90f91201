"""A handler that closes while its unread messages have paused reading (a full inbox) must still read
the peer's close reply, not wait for the close timeout: our close resumes reading, and what arrives
before the reply is dropped (the handler is done receiving)."""
from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from aioserve import App, WebSocket
from tests.support import READ_TIMEOUT, running, upgraded_session, wait_until

CLOSE_TIMEOUT = 30.0  # ws_ping_timeout, which also bounds the closing handshake: far beyond the test's waits


async def test_close_with_a_full_inbox_reads_the_peers_reply_at_once():
    inbox_full, handler_done = asyncio.Event(), asyncio.Event()
    app = App()

    @app.websocket("/ws")
    async def never_reads(ws: WebSocket):
        await ws.accept()
        await inbox_full.wait()
        await ws.close(1000, "enough")
        handler_done.set()

    async with running(app, ws_ping_interval=None, ws_ping_timeout=CLOSE_TIMEOUT) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=READ_TIMEOUT) as client:
            await wait_until(lambda: upgraded_session(server) is not None)
            session = upgraded_session(server)
            for number in range(200):  # more than the inbox holds (64 messages): reading pauses
                await client.send(f"message {number}")
            await wait_until(lambda: session.read_paused, message="the inbox never filled")
            inbox_full.set()
            await asyncio.wait_for(client.wait_closed(), READ_TIMEOUT)
            assert (client.close_code, client.close_reason) == (1000, "enough")
        await asyncio.wait_for(handler_done.wait(), READ_TIMEOUT)
        await wait_until(lambda: session.lost, timeout=READ_TIMEOUT, message="the server never closed the socket")
        await wait_until(lambda: not server.state.connections, timeout=READ_TIMEOUT)


async def test_the_inbox_byte_bound_pauses_reading_and_half_of_it_resumes():
    """Unread messages are bounded by bytes as well as by count: past max(ws_max_size, 64 KiB) bytes
    reading pauses (here 100,000), and it resumes once the handler has taken them down to half."""
    permits: asyncio.Queue[None] = asyncio.Queue()
    taken: list[int] = []
    app = App()

    @app.websocket("/ws")
    async def slow_reader(ws: WebSocket):
        await ws.accept()
        while True:
            await permits.get()
            taken.append(len(await ws.receive()))

    async with running(app, ws_ping_interval=None, ws_max_size=100_000) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=READ_TIMEOUT,
                           max_size=None) as client:
            await wait_until(lambda: upgraded_session(server) is not None)
            session = upgraded_session(server)
            for _ in range(2):
                await client.send("x" * 40_000)
            await wait_until(lambda: len(session.inbox) == 2)
            assert not session.read_paused  # 80,000 bytes: under the bound
            await client.send("x" * 40_000)
            await wait_until(lambda: session.read_paused, message="120,000 unread bytes did not pause reading")
            permits.put_nowait(None)
            await wait_until(lambda: len(taken) == 1)
            assert session.read_paused  # 80,000 left: above half the bound
            permits.put_nowait(None)
            await wait_until(lambda: len(taken) == 2)
            await wait_until(lambda: not session.read_paused, message="40,000 left did not resume reading")
