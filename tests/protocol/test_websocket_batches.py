"""WebSocket: frames sent in one turn of the loop go out as one batch, whole, in order, and bounded.

On uvloop a batch of large frames is handed to the transport's ``writelines()`` (one writev, no join);
elsewhere, and for small frames, it is joined into one ``write()``. Either way the client must get
every frame intact and in order, and a client that does not read must still stop the sender
(``pause_writing``), so the batch path is checked with the raw-frame reader of ``test_websocket``.
"""
from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from tests.protocol.test_websocket import CLOSE, open_raw, read_frame
from tests.support import HOST, running, wait_until

from aioserve import App, WebSocket
from aioserve.wsconn import WebSocketSession

app = App()
sent = {"count": 0}
BURST = 64  # 4 batches of 16 frames of 4 KiB (FLUSH_AT is 64 KiB)
FLOOD = 2560  # 10 MiB of 4 KiB messages: more than loopback's socket buffers hold


def payload(i: int, size: int) -> bytes:
    return (b"%05d" % i) * (size // 5) + b"z" * (size % 5)


@app.websocket("/burst/{size:int}")
async def burst(ws: WebSocket, size: int):
    await ws.accept()
    await ws.receive()
    for i in range(BURST):  # no await suspends here: one turn of the loop sends them all
        await ws.send(payload(i, size).decode())
    await ws.receive()


@app.websocket("/flood4k")
async def flood4k(ws: WebSocket):
    await ws.accept()
    sent["count"] = 0
    for i in range(FLOOD):
        await ws.send(payload(i, 4096))
        sent["count"] += 1
    await ws.close()


def sessions(server):
    return [c.upgraded for c in server.state.connections if c.upgraded is not None]


async def test_a_burst_of_large_and_small_frames_arrives_whole_and_in_order():
    async with running(app, ws_ping_interval=None) as server:
        for size in (4096, 32, 70_000):
            async with connect(f"ws://{HOST}:{server.port}/burst/{size}", compression=None, max_size=None) as ws:
                await ws.send("go")
                for i in range(BURST):
                    assert await asyncio.wait_for(ws.recv(), 10) == payload(i, size).decode(), (size, i)
                on_uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
                assert sessions(server)[0].gathers is on_uvloop
                await ws.send("done")


async def test_batched_large_frames_still_wait_for_a_client_that_does_not_read():
    async with running(app, ws_ping_interval=None) as server:
        ctx, conn = await open_raw(server, "/flood4k")

        def writer_paused() -> bool:
            found = sessions(server)
            return bool(found) and found[0].write_paused

        await wait_until(writer_paused, timeout=5)
        assert sent["count"] < FLOOD  # the sender is held, not buffering 10 MiB
        received = 0
        for _ in range(FLOOD + 10):
            opcode, fin, data = await read_frame(conn)
            if opcode == CLOSE:
                break
            assert fin and data == payload(received, 4096), received
            received += 1
        assert received == FLOOD and sent["count"] == FLOOD
        await ctx.__aexit__(None, None, None)


@app.websocket("/echo")
async def echo(ws: WebSocket):
    await ws.accept()
    async for message in ws:
        await ws.send(message)


async def test_clients_read_through_one_shared_buffer_each_get_their_own_bytes():
    """Every session of a loop reads into the same buffer (``get_buffer``): interleaved large messages
    from several clients must still come back to their own sender, intact."""
    async with running(app, ws_ping_interval=None) as server:
        async def client(n: int) -> None:
            async with connect(f"ws://{HOST}:{server.port}/echo", compression=None, max_size=None) as ws:
                for i in range(10):
                    message = payload(n * 100 + i, 100_000 + n)
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), 10) == message, (n, i)

        await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(8))), 30)
        assert issubclass(WebSocketSession, asyncio.BufferedProtocol)  # the transports read into get_buffer()
