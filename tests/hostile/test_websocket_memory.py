"""Memory per idle WebSocket stays bounded with permessage-deflate negotiated: no zlib state is kept
between messages (README, "Deflate memory"). With context takeover it was about 52 KiB a socket."""
from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from tests.support import ServerProcess
from tests.support.memory import status_kb

SOCKETS = 1500
LIMIT_KIB = 24  # measured 14 KiB at 10,000 sockets (benchmarks/websocket.py); context takeover: 52


async def test_idle_deflate_websockets_keep_no_compression_state():
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--no-access-log",
                       "--ws-ping-interval", "0") as server:
        server.wait_listening()
        pid = server.proc.pid
        uri = f"ws://127.0.0.1:{server.port}/ws/echo"
        message = '{"type": "score", "home": 1, "away": 2} ' * 8  # compressible: deflate is used both ways
        async with connect(uri) as warm:  # the first socket's one-off costs (imports, caches) are not counted
            await warm.send(message)
            assert await warm.recv() == message
        before = status_kb(pid, "VmRSS")
        sockets = []
        sem = asyncio.Semaphore(100)

        async def open_one():
            async with sem:
                ws = await connect(uri, open_timeout=20)
                assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 20) == message
                sockets.append(ws)

        try:
            await asyncio.wait_for(asyncio.gather(*(open_one() for _ in range(SOCKETS))), 120)
            after = status_kb(pid, "VmRSS")
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        per_socket = (after - before) / SOCKETS
        assert 0 < per_socket <= LIMIT_KIB, f"{per_socket:.1f} KiB per idle WebSocket"


# -- a message in many fragments: memory follows the message's size, never its number of frames ---------

SYNC_TIMEOUT = 30  # seconds for the server to work through a batch of frames (about 1 s on a laptop)


async def _read_frame_when_done(conn) -> tuple[int, bool, bytes]:
    """The next frame, once the server is through the frames still queued before it (seconds, not 5)."""
    from tests.protocol.test_websocket import read_frame

    head = await conn.read_exactly(1, timeout=SYNC_TIMEOUT)
    conn.buffer[:0] = head  # read_frame reads it again, then the rest under the usual timeout
    return await read_frame(conn)


async def _ping_pong(conn, payload: bytes) -> None:
    """Send a ping and read up to its pong: the server has handled every frame sent before it."""
    from tests.protocol.test_websocket import PING, PONG, frame

    await conn.send(frame(PING, payload))
    for _ in range(10):
        opcode, _, data = await _read_frame_when_done(conn)
        if opcode == PONG and data == payload:
            return
        assert opcode == PONG, (opcode, data[:40])
    raise AssertionError("no pong")


async def test_empty_continuation_frames_do_not_grow_memory():
    """A message left open (FIN=0) and fed empty continuation frames stays 1 byte long, so ws_max_size
    never triggers: each frame used to cost about 9 bytes for good (a list slot and its bytes)."""
    from tests.protocol.test_websocket import BINARY, CONT, frame, handshake
    from tests.support import current_loop_name, raw_connection

    batch = frame(CONT, b"", fin=False) * 100_000  # 600 KB on the wire; one masked frame repeated
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--no-access-log", "--ws-ping-interval", "0",
                       "--loop", current_loop_name()) as server:
        server.wait_listening()
        pid = server.proc.pid
        async with raw_connection(server.port) as conn:
            await conn.send(handshake("/ws/echo"))
            assert (await conn.read_response()).status == 101
            await conn.send(frame(BINARY, b"x", fin=False))
            for _ in range(5):  # warm up: the parser's buffers and the allocator's arenas reach their size
                await conn.send(batch)
            await _ping_pong(conn, b"warm")
            before = status_kb(pid, "VmRSS")
            for round_ in range(3):
                for _ in range(5):
                    await conn.send(batch)
                await _ping_pong(conn, b"%d" % round_)
            after = status_kb(pid, "VmRSS")
        growth_kib = after - before  # 1.5 million frames: about 13 MiB before the fix
        assert growth_kib < 3 * 1024, f"+{growth_kib} KiB of RSS for 1.5 million empty continuation frames"


async def test_a_message_in_one_byte_fragments_costs_about_its_size():
    """512 KiB (ws_max_size) in 524,288 one-byte fragments: the peak used to be about 70 MiB (a bytes
    object and a list slot per fragment; 115 MiB for 1 MiB). Now: the message, once or twice, plus what
    one read of frames costs the sans-IO parser (a Frame per frame of a 256 KiB read): about 9 MiB."""
    from tests.protocol.test_websocket import BINARY, CONT, frame, handshake, read_frame
    from tests.support import RssSampler, current_loop_name, raw_connection

    size = 1 << 19
    batch = frame(CONT, b"a", fin=False) * 100_000
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--no-access-log", "--ws-ping-interval", "0",
                       "--ws-max-size", str(size), "--loop", current_loop_name()) as server:
        server.wait_listening()
        async with raw_connection(server.port) as conn:
            await conn.send(handshake("/ws/echo"))
            assert (await conn.read_response()).status == 101
            await conn.send(frame(BINARY, b"a" * 1000))  # the echo path's one-off costs are not counted
            assert await read_frame(conn) == (BINARY, True, b"a" * 1000)
            with RssSampler(server.proc.pid) as rss:
                await conn.send(frame(BINARY, b"a", fin=False))
                left = size - 2
                for _ in range(left // 100_000):
                    await conn.send(batch)
                await conn.send(frame(CONT, b"a", fin=False) * (left % 100_000) + frame(CONT, b"a"))
                opcode, fin, data = await _read_frame_when_done(conn)
            assert (opcode, fin, len(data)) == (BINARY, True, size) and data == b"a" * size
        assert rss.growth_mib < 24, f"peak +{rss.growth_mib:.1f} MiB for a 512 KiB message in 1-byte fragments"
