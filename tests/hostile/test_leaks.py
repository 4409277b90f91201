"""Long runs leave nothing behind: after N interactions and after 2N, what the server holds is back
at its baseline (live objects of its own types, tasks, open descriptors, its tables).

A closed connection used to stay reachable from the server's timer heap until its entry fell due
(up to the keep-alive timeout, 75 s) or stale entries outnumbered the open connections past 64, with
every request it still held (pipeline, tasks, tracebacks): 36 dead connections and 540 exchanges
after 100 pipelined bursts cut by their clients. A static directory holding a FIFO stopped the whole
server: opening it for reading waited for a writer, on the event loop.
"""
from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import Counter

import pytest

from aioserve import App, FileResponse, stream
from aioserve.connection import Connection
from aioserve.exchange import Exchange
from aioserve.request import Request
from tests.support import RawConnection, request_bytes, running, wait_until

TRACKED = (Connection, Exchange, Request)


def census(server) -> Counter:
    """Live objects of the server's own types, tasks, descriptors and the server's tables."""
    gc.collect()
    counts = Counter(type(o).__name__ for o in gc.get_objects() if type(o) in TRACKED)
    counts["tasks"] = len(asyncio.all_tasks()) - 1  # not the test's own
    counts["fds"] = len(os.listdir("/proc/self/fd"))
    counts["open connections"] = server.connections
    return counts


def growth(before: Counter, after: Counter) -> dict[str, int]:
    return {k: after[k] - before[k] for k in set(before) | set(after) if after[k] != before[k]}


async def settled(server) -> None:
    """Every connection the clients closed is closed on the server's side too."""
    await wait_until(lambda: server.connections == 0, 5, "connections still open")
    for _ in range(3):  # the loop turns in which connection_lost's callbacks run
        await asyncio.sleep(0)


async def run_rounds(server, one, n: int) -> tuple[dict[str, int], dict[str, int]]:
    for i in range(5):  # warm-up: imports, caches, the executor's threads
        await one(i)
    await settled(server)
    base = census(server)
    for i in range(n):
        await one(i)
    await settled(server)
    first = census(server)
    for i in range(n):
        await one(n + i)
    await settled(server)
    second = census(server)
    return growth(base, first), growth(first, second)


def app_with_streams() -> tuple[App, asyncio.Event]:
    # No handler that raises: pytest's log capture keeps each error record, whose traceback holds the
    # connection (a test artifact; a handler writing to stderr keeps nothing).
    app = App()
    started = asyncio.Event()

    @app.get("/")
    async def index(request):
        return "ok"

    @app.get("/file")
    async def file(request):
        return FileResponse(__file__)

    @app.get("/stream")
    async def numbers(request):
        async def gen():
            for i in range(20):
                yield b"x" * 100
        return stream(gen())

    @app.get("/endless")
    async def endless(request):
        async def gen():
            started.set()
            while True:
                yield b"e" * 16384
                await asyncio.sleep(0)
        return stream(gen())

    return app, started


async def leave(conn: RawConnection, i: int) -> None:
    """Half the clients reset their connection, half close it."""
    if i % 2:
        conn.reset()
    else:
        await conn.close()


def assert_flat(first: dict, second: dict) -> None:
    """Nothing grew with the rounds (two rounds' growth, as run_rounds measures it)."""
    for key in ("Connection", "Exchange", "Request", "tasks", "fds", "open connections"):
        assert abs(first.get(key, 0)) <= 2 and abs(second.get(key, 0)) <= 2, (first, second)


async def test_pipelined_bursts_cut_by_the_client_leave_nothing_behind():
    """The regression: each closed connection kept its pipeline alive through the timer heap."""
    app, _ = app_with_streams()
    burst = b"".join(request_bytes("GET", t) for t in ("/", "/file", "/stream", "/nope", "/endless") * 3)
    async with running(app) as server:
        async def one(i: int) -> None:
            conn = await RawConnection.open(server.port)
            conn.write(burst)
            await conn.read_some()
            await leave(conn, i)

        first, second = await run_rounds(server, one, 60)
    # Nothing grows with the number of connections: before the fix, 10 to 64 dead connections (with
    # 15 exchanges each) were still reachable at any moment.
    assert_flat(first, second)


async def test_keep_alive_and_clients_gone_mid_stream_return_to_baseline():
    app, started = app_with_streams()
    async with running(app) as server:
        async def one(i: int) -> None:
            conn = await RawConnection.open(server.port)
            for target in ("/", "/file", "/stream", "/nope"):
                await conn.request("GET", target)
            started.clear()
            conn.write(request_bytes("GET", "/endless"))
            await asyncio.wait_for(started.wait(), 5)
            await conn.read_some()
            await leave(conn, i)

        first, second = await run_rounds(server, one, 60)
    assert_flat(first, second)


async def test_no_connection_is_held_once_all_are_closed():
    """The timer heap holds no closed connection once none is open (it held up to 64 before)."""
    app, _ = app_with_streams()
    async with running(app) as server:
        for _ in range(40):
            conn = await RawConnection.open(server.port)
            await conn.request("GET", "/")
            await conn.close()
        await settled(server)
        gc.collect()
        assert [o for o in gc.get_objects() if type(o) is Connection] == []


async def test_a_fifo_in_a_static_directory_is_404_and_never_blocks_the_loop(tmp_path):
    (tmp_path / "a.txt").write_text("plain")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    os.mkfifo(tmp_path / "a.txt.gz")  # a precompressed "sibling" that is a FIFO: never opened for good
    app = App()
    app.static("/s", tmp_path)
    app.static("/f", tmp_path, follow_symlinks=True)

    @app.get("/direct")
    async def direct(request):
        return FileResponse(fifo)

    # Old code: the loop blocked in open() until a writer came. This thread is that writer, after 3 s,
    # so the test ends either way; the request must be answered long before it.
    stop = threading.Event()

    def writer() -> None:
        if stop.wait(3):
            return
        for _ in range(400):  # 20 s at most: open each FIFO as a writer whenever a reader waits on it
            for target in (fifo, tmp_path / "a.txt.gz"):
                try:
                    os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # ENXIO: nobody is reading it
                    pass
            if stop.wait(0.05):
                return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        async with running(app) as server:
            conn = await RawConnection.open(server.port)
            begun = time.monotonic()
            for target, headers in (("/s/pipe", None), ("/f/pipe", None), ("/direct", None),
                                    ("/s/a.txt", {"Accept-Encoding": "gzip"})):
                response = await conn.request("GET", target, headers=headers)
                assert response.status == (200 if target == "/s/a.txt" else 404), target
            assert time.monotonic() - begun < 2.0
            assert response.body == b"plain" and response.header("content-encoding") is None
            await conn.close()
    finally:
        stop.set()
        thread.join(5)
