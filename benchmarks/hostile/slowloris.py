"""Slowloris cut-off: how long a client dribbling one byte a second keeps a connection.

    python benchmarks/hostile/slowloris.py [--loop uvloop|asyncio] [--clients 200] [--timeout-header S]

N clients connect and send a request head one byte per ``--interval`` seconds, never finishing it.
The script records, per client, the time from connect until the server answered 408 / closed, and
meanwhile measures the latency of an ordinary client.  Without ``--timeout-header`` the server's
default (15 s) applies.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _common import HOST, PeakSampler, Server, mib

HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris\r\n" + b"X-Pad: " + b"p" * 200 + b"\r\n\r\n"


async def dribbler(port: int, interval: float, budget: float) -> tuple[float, int, bytes]:
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, port)
    sent = 0

    async def drip() -> None:
        nonlocal sent
        for i in range(len(HEAD)):
            writer.write(HEAD[i:i + 1])
            sent += 1
            await asyncio.sleep(interval)

    task = asyncio.ensure_future(drip())
    try:
        answer = await asyncio.wait_for(reader.read(200), budget)
    except (asyncio.TimeoutError, ConnectionError):
        answer = b"<no close within budget>"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
    return time.monotonic() - start, sent, answer


async def ordinary(port: int, rounds: int, pause: float) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.monotonic()
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        if data.startswith(b"HTTP/1.1 200"):
            out.append((time.monotonic() - t) * 1000)
        await asyncio.sleep(pause)
    return out


async def run(port: int, clients: int, interval: float, budget: float, expected: float):
    tasks = [asyncio.ensure_future(dribbler(port, interval, budget)) for _ in range(clients)]
    await asyncio.sleep(0.5)
    latencies = await ordinary(port, rounds=max(1, int(expected)), pause=0.5)
    return await asyncio.gather(*tasks), latencies


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between bytes")
    p.add_argument("--timeout-header", type=float, default=None, help="server setting (default: its own, 15 s)")
    args = p.parse_args()

    extra = [] if args.timeout_header is None else ["--timeout-header", str(args.timeout_header)]
    expected = args.timeout_header or 15.0
    with Server(args.loop, extra) as server:
        base = server.rss_kb()
        sampler = PeakSampler(server.pid)
        sampler.start()
        results, latencies = asyncio.run(run(server.port, args.clients, args.interval, expected + 15, expected))
        peak = sampler.stop()
    times = sorted(r[0] for r in results)
    statuses = {}
    for _, _, answer in results:
        key = answer.split(b"\r\n", 1)[0].decode("latin-1") or "<closed without answer>"
        statuses[key] = statuses.get(key, 0) + 1
    sent = [r[1] for r in results]
    print(
        f"slowloris loop={args.loop} clients={args.clients} one byte per {args.interval}s, "
        f"timeout_header={expected}s: cut_off min={times[0]:.2f}s median={statistics.median(times):.2f}s "
        f"max={times[-1]:.2f}s bytes_sent_each={min(sent)}-{max(sent)} answers={statuses} "
        f"ordinary_client ok={len(latencies)} p50={statistics.median(latencies) if latencies else float('nan'):.1f}ms "
        f"max={max(latencies) if latencies else float('nan'):.1f}ms rss_growth={mib(peak - base):.1f}MiB"
    )


if __name__ == "__main__":
    main()
