"""A handler that closes while its unread messages have paused reading (a full inbox) must still read
the peer's close reply, not wait for the close timeout: our close resumes reading, and what arrives
before the reply is dropped (the handler is done receiving)."""
from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from aioserve import App, WebSocket
from tests.support import READ_TIMEOUT, running, wait_until

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

    def session_of(server):
        return next((c.upgraded for c in server.state.connections if c.upgraded is not None), None)

    async with running(app, ws_ping_interval=None, ws_ping_timeout=CLOSE_TIMEOUT) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=READ_TIMEOUT) as client:
            await wait_until(lambda: session_of(server) is not None)
            session = session_of(server)
            for number in range(200):  # more than the inbox holds (64 messages): reading pauses
                await client.send(f"message {number}")
            await wait_until(lambda: session.read_paused, message="the inbox never filled")
            inbox_full.set()
            await asyncio.wait_for(client.wait_closed(), READ_TIMEOUT)
            assert (client.close_code, client.close_reason) == (1000, "enough")
        await asyncio.wait_for(handler_done.wait(), READ_TIMEOUT)
        await wait_until(lambda: session.lost, timeout=READ_TIMEOUT, message="the server never closed the socket")
        await wait_until(lambda: not server.state.connections, timeout=READ_TIMEOUT)
