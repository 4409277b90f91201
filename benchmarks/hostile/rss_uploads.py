"""Peak RSS growth of the server while N clients each upload M MiB to a slow handler that reads the
body through ``request.stream()`` and discards it.

    python benchmarks/hostile/rss_uploads.py [--loop uvloop|asyncio] [--clients 100] [--mib 100]

The handler sleeps ``--delay`` seconds after every piece it reads, so it consumes more slowly than
the clients can send: without flow control the server would buffer the difference.
"""
from __future__ import annotations

import argparse
import asyncio
import time

from _common import HOST, PeakSampler, Server, get, mib

MiB = 1024 * 1024


async def upload(port: int, size: int, delay: float, piece: bytes, deadline: float) -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"POST /slow-upload?delay=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                     % (str(delay).encode(), size))
        sent = 0
        while sent < size and time.monotonic() < deadline:
            writer.write(piece)
            sent += len(piece)
            await asyncio.wait_for(writer.drain(), max(0.1, deadline - time.monotonic()))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), max(0.1, deadline - time.monotonic()))
        body = await asyncio.wait_for(reader.read(200), 10)
        return size if head.startswith(b"HTTP/1.1 200") and str(size).encode() in body else -1
    finally:
        writer.close()


async def run(port: int, clients: int, size: int, delay: float, budget: float) -> tuple[int, int]:
    piece = b"\x00" * MiB
    deadline = time.monotonic() + budget
    results = await asyncio.gather(*(upload(port, size, delay, piece, deadline) for _ in range(clients)),
                                   return_exceptions=True)
    ok = sum(1 for r in results if r == size)
    return ok, clients - ok


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--mib", type=int, default=100, help="upload size per client, MiB")
    p.add_argument("--delay", type=float, default=0.0005, help="handler sleep per piece read, s")
    p.add_argument("--budget", type=float, default=300.0, help="give up after this many seconds")
    args = p.parse_args()

    with Server(args.loop, ["--timeout-body", "600"]) as server:
        assert get(server.port, "/").startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
        base = server.rss_kb()
        sampler = PeakSampler(server.pid)
        sampler.start()
        started = time.monotonic()
        ok, failed = asyncio.run(run(server.port, args.clients, args.mib * MiB, args.delay, args.budget))
        elapsed = time.monotonic() - started
        peak = sampler.stop()
    total_gib = ok * args.mib / 1024
    print(
        f"rss_uploads loop={args.loop} clients={args.clients} upload={args.mib}MiB each "
        f"(handler sleeps {args.delay * 1000:.1f}ms per piece): baseline={mib(base):.1f}MiB "
        f"peak_growth={mib(peak - base):.1f}MiB per_client={mib(peak - base) / args.clients * 1024:.0f}KiB "
        f"completed={ok} failed={failed} moved={total_gib:.1f}GiB in {elapsed:.1f}s "
        f"({total_gib * 1024 / elapsed:.0f} MiB/s)"
    )


if __name__ == "__main__":
    main()
