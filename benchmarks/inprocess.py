"""In-process cost of one request: parsing, routing, the handler and the answer, without sockets.

    python -m benchmarks.inprocess [--requests 50000] [--repeat 15] [--loop uvloop|asyncio] [--only users,...]

Feeds ready-made requests straight into ``Connection.data_received`` over a transport that only
counts writes, and times the same for the bare httptools protocol (``servers/bare.py``). No kernel,
no event-loop wakeups, no load generator: the figure is the Python work per request, the part of the
hot path aioserve controls, and it is stable enough on a noisy machine to compare one change with
the next (runs alternate between the two protocols; the best of ``--repeat`` is reported).
Under real load each microsecond here costs about 2.5 more (caches are colder between requests).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import time

from aioserve.config import Config
from aioserve.connection import Connection
from aioserve.shared import ServerState

from .servers import bare
from .servers.aioserve_app import app

HOST = b"Host: 127.0.0.1:8000\r\n"
REQUESTS = {
    "plaintext": b"GET /plaintext HTTP/1.1\r\n" + HOST + b"\r\n",
    "json": b"GET /json HTTP/1.1\r\n" + HOST + b"\r\n",
    "plaintext-def": b"GET /plaintext-def HTTP/1.1\r\n" + HOST + b"\r\n",
    "users": b"GET /users/4242 HTTP/1.1\r\n" + HOST + b"\r\n",
    "echo-1k": b"POST /echo HTTP/1.1\r\n" + HOST + b"Content-Length: 1024\r\n\r\n" + b"x" * 1024,
    "browser-like": (b"GET /plaintext HTTP/1.1\r\n" + HOST + b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
                     b"Accept: text/html,application/xhtml+xml\r\nAccept-Encoding: gzip, deflate\r\n"
                     b"Accept-Language: en-US,en;q=0.9\r\nConnection: keep-alive\r\n\r\n"),
}
PIPELINE_DEPTH = 16
# What the bare protocol is asked instead, where it has no such route (a plain def is aioserve's).
BARE_REQUESTS = {"plaintext-def": REQUESTS["plaintext"]}
# Requests whose handler awaits (the body): the loop must turn for them to be answered.
LOOP_TURNS = {"echo-1k": 3}


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def time_protocol(make, data: bytes, requests: int, per_read: int, turns: int = 0) -> float:
    """Nanoseconds per request, feeding ``per_read`` requests per data_received call (and letting the
    loop turn ``turns`` times after each, for handlers that await)."""
    protocol = make()
    transport = CountingTransport()
    protocol.connection_made(transport)
    chunk = data * per_read
    reads = max(1, requests // per_read)
    for _ in range(200):  # warm up
        protocol.data_received(chunk)
        for _ in range(turns):
            await asyncio.sleep(0)
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(reads):
            protocol.data_received(chunk)
            for _ in range(turns):
                await asyncio.sleep(0)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if transport.writes < reads:
        raise SystemExit(f"only {transport.writes} writes for {reads} reads: requests were not answered")
    return elapsed / (reads * per_read) * 1e9


async def measure(args: argparse.Namespace) -> None:
    state = ServerState(app, Config(access_log=False), asyncio.get_running_loop())
    print(f"{'request':<28} {'aioserve ns':>12} {'bare ns':>9} {'ratio':>6}")
    for name, data in REQUESTS.items():
        if args.only and name not in args.only:
            continue
        turns = LOOP_TURNS.get(name, 0)
        for per_read in (1,) if turns else (1, PIPELINE_DEPTH):
            ours, theirs = [], []
            for _ in range(args.repeat):
                ours.append(await time_protocol(lambda: Connection(state), data, args.requests, per_read, turns))
                theirs.append(await time_protocol(bare.BareProtocol, BARE_REQUESTS.get(name, data), args.requests,
                                                  per_read, turns))
            label = name if per_read == 1 else f"{name} x{per_read} pipelined"
            print(f"{label:<28} {min(ours):12,.0f} {min(theirs):9,.0f} {min(ours) / min(theirs):5.1f}x", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=50_000, help="requests per timed run")
    p.add_argument("--repeat", type=int, default=15, help="timed runs per protocol; the best is reported")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--only", type=lambda text: text.split(","), default=None,
                   help=f"comma-separated requests to time (of {', '.join(REQUESTS)})")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(measure(args))
    else:
        asyncio.run(measure(args))


if __name__ == "__main__":
    main()
