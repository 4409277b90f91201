"""The server-wide deadline queue (timers.py): exact, lazy, and it never holds closed connections."""
from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace

import pytest

from aioserve.timers import INF, Timers


class Fired(list):
    """(connection, loop time) for each callback, in order; ``wait_for`` awaits the n-th."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def append(self, item) -> None:
        super().append(item)
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self) < count:
                self.changed.clear()
                await self.changed.wait()


class FakeConn:
    """What Timers needs of a connection: ``timer_at`` and ``on_timer``."""

    def __init__(self, timers: Timers, fired: Fired) -> None:
        self.timers = timers
        self.fired = fired
        self.timer_at = INF

    def arm(self, when: float) -> None:
        if when < self.timer_at:
            self.timer_at = when
            self.timers.schedule(self, when)

    def on_timer(self) -> None:
        self.fired.append((self, asyncio.get_running_loop().time()))


@pytest.fixture
async def queue():
    """A Timers over a set of live connections, and the record of what it fired."""
    loop = asyncio.get_running_loop()
    live: set = set()
    timers = Timers(loop, live)
    yield SimpleNamespace(loop=loop, live=live, timers=timers, fired=Fired())
    timers.close()


async def test_each_connection_fires_once_at_its_time_in_order(queue):
    conns = [FakeConn(queue.timers, queue.fired) for _ in range(3)]
    queue.live.update(conns)
    now = queue.loop.time()
    for conn, delay in zip(conns, (0.15, 0.05, 0.10)):
        conn.arm(now + delay)
    await queue.fired.wait_for(3)
    assert [c for c, _ in queue.fired] == [conns[1], conns[2], conns[0]]
    for (conn, at), delay in zip(queue.fired, (0.05, 0.10, 0.15)):
        assert at >= now + delay - 0.002  # never early (the loop's clock has 1 ms steps)
    assert all(c.timer_at == INF for c in conns)


async def test_an_earlier_deadline_supersedes_the_queued_one(queue):
    conn = FakeConn(queue.timers, queue.fired)
    queue.live.add(conn)
    now = queue.loop.time()
    conn.arm(now + 0.3)
    conn.arm(now + 0.05)  # earlier: queued too; the 0.3 s entry is now stale
    await queue.fired.wait_for(1)
    await asyncio.sleep(now + 0.5 - queue.loop.time())  # past the stale entry: it must not fire
    assert len(queue.fired) == 1 and queue.fired[0][1] < now + 0.3


async def test_closed_connections_are_not_fired_and_not_kept(queue):
    refs = []
    now = queue.loop.time()
    for _ in range(500):  # connections that open, queue a far deadline, and close
        conn = FakeConn(queue.timers, queue.fired)
        queue.live.add(conn)
        conn.arm(now + 60)
        refs.append(weakref.ref(conn))
        queue.live.discard(conn)
        conn.timer_at = INF  # what connection_lost does
    del conn
    gc.collect()
    assert len(queue.timers.heap) <= 64
    assert sum(ref() is not None for ref in refs) <= 64  # swept out, not held until their deadline
    assert not queue.fired


async def test_a_failing_callback_does_not_stop_the_others(queue, caplog):
    class Broken(FakeConn):
        def on_timer(self) -> None:
            raise RuntimeError("bug")

    broken, good = Broken(queue.timers, queue.fired), FakeConn(queue.timers, queue.fired)
    queue.live.update((broken, good))
    now = queue.loop.time()
    broken.arm(now + 0.02)
    good.arm(now + 0.02)
    await queue.fired.wait_for(1)
    assert [c for c, _ in queue.fired] == [good]
    assert "Error in the timeout" in caplog.text
