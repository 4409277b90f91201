"""Instructions per WebSocket echo through real sockets: ``ws_inprocess`` plus the event loop's reads and writes.

    valgrind --tool=callgrind python -m benchmarks.ws_loopback --batches 200 --size 4096 [--loop uvloop|asyncio]
                                   [--server bare] [--connections 64] [--faults]

``ws_inprocess`` feeds bytes to the session's ``data_received`` and counts what it writes, so it cannot
see how the loop hands bytes in and takes them out (a ``bytes`` object per read, ``write`` or
``writelines``). Here the server (``aioserve.serve``) and one client share a process and a loop over
127.0.0.1: the client sends 16 pre-masked frames in one write and reads the 16 echoes (counted by
their known size), ``--batches`` times. Under callgrind, (I(3N) - I(N)) / (2N x 16) is the instructions
per message of server and client together; the client's part does not change with the server, so
the difference between two server versions is the server's. The kernel's work is not counted.

``--server bare`` serves the bare-websockets ceiling instead (``ws_apps.bare_ws_protocol()``: websockets'
``ServerProtocol`` echoing in ``data_received``, no task, no bounds), with the same client: aioserve's
count minus this one is what aioserve adds over any server on websockets' parser. ``--connections C``
opens C WebSockets and has each write its batch in the same turn every round, so the server finds them
all readable at once, as under the 64-connection load: the loop's turns per batch then count too.
"""
from __future__ import annotations

import argparse
import asyncio
import resource

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

import aioserve

from .servers.ws_apps import _aioserve, bare_ws_protocol

IN_FLIGHT = 16


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
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
    return reader, writer


async def echo(batches: int, size: int, bare: bool = False, connections: int = 1, faults: bool = False) -> None:
    if bare:
        bare_server = await asyncio.get_running_loop().create_server(bare_ws_protocol(), "127.0.0.1", 0)
        port = bare_server.sockets[0].getsockname()[1]
    else:
        server = await aioserve.serve(_aioserve(), host="127.0.0.1", port=0, access_log=False, ws_ping_interval=None)
        port = server.port
    try:
        peers = [await _connect(port) for _ in range(connections)]
        batch = b"".join(Frame(Opcode.TEXT, (f"{i:02d}" + "x" * size)[:size].encode()).serialize(mask=True)
                         for i in range(IN_FLIGHT))
        reply = IN_FLIGHT * len(Frame(Opcode.TEXT, b"x" * size).serialize(mask=False))

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(batch)
            await asyncio.wait_for(reader.readexactly(reply), 10)

        before = resource.getrusage(resource.RUSAGE_SELF)
        if connections == 1:
            reader, writer = peers[0]
            for _ in range(batches):
                writer.write(batch)
                await asyncio.wait_for(reader.readexactly(reply), 10)
        else:  # every client writes its batch in one turn, so the server finds all of them readable at once
            for _ in range(batches):
                await asyncio.gather(*(one(reader, writer) for reader, writer in peers))
        after = resource.getrusage(resource.RUSAGE_SELF)
        if faults:
            messages = batches * connections * IN_FLIGHT
            print(f"minor page faults per message: {(after.ru_minflt - before.ru_minflt) / messages:.3f}")
        for _, writer in peers:
            writer.close()
            await writer.wait_closed()
    finally:
        if bare:
            bare_server.close()
        else:
            await server.shutdown(timeout=5)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ws_loopback", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=200, help="batches of 16 messages")
    p.add_argument("--size", type=int, default=4096, help="payload bytes per text message")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--server", choices=["aioserve", "bare"], default="aioserve",
                   help="bare: the bare-websockets ceiling (ws_apps.bare_ws_protocol) instead of aioserve")
    p.add_argument("--connections", type=int, default=1,
                   help="WebSockets, each with a batch in flight every round (the wall-clock benchmark has 64)")
    p.add_argument("--faults", action="store_true", help="print minor page faults per message (both sides)")
    args = p.parse_args()
    run = echo(args.batches, args.size, args.server == "bare", args.connections, args.faults)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run)
    else:
        asyncio.run(run)


if __name__ == "__main__":
    main()
