"""In-process cost of one WebSocket echo: websockets' parser and serializer plus aioserve's session, no sockets.

    python -m benchmarks.ws_inprocess [--messages 40000] [--repeat 7] [--sizes 32,4096] [--loop uvloop|asyncio]
                                      [--floor | --bare]

An upgrade request goes through ``Connection`` (which hands the transport to the WebSocket session),
then batches of 16 pre-masked text frames (the load of ``benchmarks/websocket.py``: 16 in flight) are
fed straight into the session's ``data_received``, the loop turns until the echo handler has answered
all 16, and the transport only counts the bytes written. No kernel, no load generator: the figure is
the Python work per message, stable enough on a noisy machine to compare one change with the next
(best of ``--repeat``). Under ``valgrind --tool=callgrind`` it gives instruction counts.

``--floor`` times websockets' sans-IO ``Protocol`` alone doing only what any echo on it must do: parse
the same 16 masked frames, decode each as UTF-8, encode and serialize 16 replies. No loop, no session:
the part of the per-message cost that aioserve cannot remove while websockets is its framer.

``--bare`` feeds the same batches, through the same counting transport and driver, to the bare-websockets
ceiling (``ws_apps.bare_ws_protocol()``, echoing in ``data_received``): aioserve's figure minus this one
is what its session, handler task and loop turns add per message.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import time

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from aioserve.config import Config
from aioserve.connection import Connection
from aioserve.shared import ServerState

from .inprocess import CountingTransport
from .servers.ws_apps import _aioserve, bare_ws_protocol

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
IN_FLIGHT = 16


class WsTransport(CountingTransport):
    """Counts bytes written; holds the protocol the connection hands the transport to."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.written += len(data)

    def writelines(self, data: list[bytes]) -> None:  # like uvloop's: the frames as they are, no join
        self.writes += 1
        self.written += sum(map(len, data))

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[return-value]

    def abort(self) -> None:
        pass


async def time_echo(state: ServerState | None, size: int, messages: int) -> float:
    """Nanoseconds per echoed message of ``size`` bytes (``state`` None: the bare-websockets ceiling)."""
    transport = WsTransport()
    if state is None:
        session = bare_ws_protocol()()
        session.connection_made(transport)
        session.data_received(UPGRADE)
    else:
        connection = Connection(state)
        connection.connection_made(transport)
        connection.data_received(UPGRADE)
        for _ in range(10):
            await asyncio.sleep(0)
        session = transport.protocol
        if session is connection or session is None:
            raise SystemExit("the upgrade was not handed over")
    batch = _batch(size)
    reply = len(Frame(Opcode.TEXT, b"x" * size).serialize(mask=False))

    async def run(batches: int) -> None:
        for _ in range(batches):
            target = transport.written + IN_FLIGHT * reply
            session.data_received(batch)
            for _ in range(20):  # bounded: the handler answers a batch in a few turns
                if transport.written >= target:
                    break
                await asyncio.sleep(0)
            else:
                raise SystemExit("the handler did not answer a batch")

    await run(100)  # warm up
    gc.collect()
    gc.disable()
    try:
        batches = max(1, messages // IN_FLIGHT)
        start = time.perf_counter()
        await run(batches)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if state is not None:
        session.abort()
    return elapsed / (batches * IN_FLIGHT) * 1e9


def _batch(size: int) -> bytes:
    """16 masked text frames of ``size`` bytes, as the load generator sends them."""
    return b"".join(Frame(Opcode.TEXT, (f"{i:02d}" + "x" * size)[:size].encode()).serialize(mask=True)
                    for i in range(IN_FLIGHT))


def time_floor(size: int, messages: int) -> float:
    """Nanoseconds per message for websockets' ``Protocol`` alone: parse, decode, encode, serialize."""
    protocol = Protocol(Side.SERVER)
    batch = _batch(size)

    def run(batches: int) -> None:
        for _ in range(batches):
            protocol.receive_data(batch)
            for frame in protocol.events_received():
                protocol.send_text(frame.data.decode().encode())
            if len(protocol.data_to_send()) != IN_FLIGHT:
                raise SystemExit("the protocol did not answer a batch")

    run(100)
    gc.collect()
    gc.disable()
    try:
        batches = max(1, messages // IN_FLIGHT)
        start = time.perf_counter()
        run(batches)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed / (batches * IN_FLIGHT) * 1e9


async def measure(args: argparse.Namespace) -> None:
    if args.floor:
        for size in args.sizes:
            best = min(time_floor(size, args.messages) for _ in range(args.repeat))
            print(f"{size:>6} B, websockets alone: {best:8,.0f} ns per message", flush=True)
        return
    state = None if args.bare else ServerState(_aioserve(), Config(access_log=False), asyncio.get_running_loop())
    for size in args.sizes:
        best = min([await time_echo(state, size, args.messages) for _ in range(args.repeat)])
        print(f"{size:>6} B echo{' (bare-websockets)' if args.bare else ''}: {best:8,.0f} ns per message", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ws_inprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=40_000, help="messages per timed run")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per size; the best is reported")
    p.add_argument("--sizes", type=lambda text: [int(s) for s in text.split(",")], default=[32, 4096])
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--floor", action="store_true", help="websockets' Protocol alone: the floor (see above)")
    p.add_argument("--bare", action="store_true", help="the bare-websockets ceiling instead of aioserve (see above)")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(measure(args))
    else:
        asyncio.run(measure(args))


if __name__ == "__main__":
    main()
