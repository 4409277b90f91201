"""Instructions per WebSocket echo through real sockets: ``ws_inprocess`` plus the event loop's reads and writes.

    valgrind --tool=callgrind python -m benchmarks.ws_loopback --batches 200 --size 4096 [--loop uvloop|asyncio]

``ws_inprocess`` feeds bytes to the session's ``data_received`` and counts what it writes, so it cannot
see how the loop hands bytes in and takes them out (a ``bytes`` object per read, ``write`` or
``writelines``). Here the server (``aioserve.serve``) and one client share a process and a loop over
127.0.0.1: the client sends 16 pre-masked frames in one write and reads the 16 echoes (counted by
their known size), ``--batches`` times. Under callgrind, (I(3N) - I(N)) / (2N x 16) is the instructions
per message of server and client together; the client's part does not change with the server, so
the difference between two server versions is the server's. The kernel's work is not counted.
"""
from __future__ import annotations

import argparse
import asyncio

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

import aioserve

from .servers.ws_apps import _aioserve

IN_FLIGHT = 16


async def echo(batches: int, size: int) -> None:
    server = await aioserve.serve(_aioserve(), host="127.0.0.1", port=0, access_log=False, ws_ping_interval=None)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{server.port}/ws"))
        client.send_request(client.connect())
        writer.write(b"".join(client.data_to_send()))
        events: list = []
        for _ in range(100):  # bounded: the 101 comes in a read or two
            client.receive_data(await asyncio.wait_for(reader.read(65536), 10))
            events = client.events_received()
            if events or client.handshake_exc is not None:
                break
        if not events or not isinstance(events[0], Response) or events[0].status_code != 101:
            raise SystemExit(f"handshake failed: {client.handshake_exc}")
        batch = b"".join(Frame(Opcode.TEXT, (f"{i:02d}" + "x" * size)[:size].encode()).serialize(mask=True)
                         for i in range(IN_FLIGHT))
        reply = IN_FLIGHT * len(Frame(Opcode.TEXT, b"x" * size).serialize(mask=False))
        for _ in range(batches):
            writer.write(batch)
            await asyncio.wait_for(reader.readexactly(reply), 10)
        writer.close()
        await writer.wait_closed()
    finally:
        await server.shutdown(timeout=5)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ws_loopback", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=200, help="batches of 16 messages")
    p.add_argument("--size", type=int, default=4096, help="payload bytes per text message")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(echo(args.batches, args.size))
    else:
        asyncio.run(echo(args.batches, args.size))


if __name__ == "__main__":
    main()
