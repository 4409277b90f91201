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
