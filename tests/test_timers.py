"""The server-wide deadline queue (timers.py): exact, lazy, and it never holds closed connections."""
from __future__ import annotations

import asyncio
import gc
import weakref

from aioserve.timers import INF, Timers


class FakeConn:
    """What Timers needs of a connection: ``timer_at`` and ``_on_timer``."""

    def __init__(self, timers: Timers, fired: list) -> None:
        self.timers = timers
        self.fired = fired
        self.timer_at = INF

    def arm(self, when: float) -> None:
        if when < self.timer_at:
            self.timer_at = when
            self.timers.schedule(self, when)

    def _on_timer(self) -> None:
        self.fired.append((self, asyncio.get_running_loop().time()))


async def test_each_connection_fires_once_at_its_time_in_order():
    loop = asyncio.get_running_loop()
    live: set = set()
    timers = Timers(loop, live)
    fired: list = []
    conns = [FakeConn(timers, fired) for _ in range(3)]
    live.update(conns)
    now = loop.time()
    for conn, delay in zip(conns, (0.15, 0.05, 0.10)):
        conn.arm(now + delay)
    for _ in range(50):
        if len(fired) == 3:
            break
        await asyncio.sleep(0.02)
    assert [c for c, _ in fired] == [conns[1], conns[2], conns[0]]
    for (conn, at), delay in zip(fired, (0.05, 0.10, 0.15)):
        assert at >= now + delay - 0.002  # never early (the loop's clock has 1 ms steps)
    assert all(c.timer_at == INF for c in conns)
    timers.close()


async def test_an_earlier_deadline_supersedes_the_queued_one():
    loop = asyncio.get_running_loop()
    live: set = set()
    timers = Timers(loop, live)
    fired: list = []
    conn = FakeConn(timers, fired)
    live.add(conn)
    now = loop.time()
    conn.arm(now + 0.3)
    conn.arm(now + 0.05)  # earlier: queued too; the 0.3 s entry is now stale
    await asyncio.sleep(0.5)
    assert len(fired) == 1 and fired[0][1] < now + 0.3
    timers.close()


async def test_closed_connections_are_not_fired_and_not_kept():
    loop = asyncio.get_running_loop()
    live: set = set()
    timers = Timers(loop, live)
    fired: list = []
    refs = []
    now = loop.time()
    for _ in range(500):  # connections that open, queue a far deadline, and close
        conn = FakeConn(timers, fired)
        live.add(conn)
        conn.arm(now + 60)
        refs.append(weakref.ref(conn))
        live.discard(conn)
        conn.timer_at = INF  # what connection_lost does
    del conn
    gc.collect()
    assert len(timers.heap) <= 64
    assert sum(ref() is not None for ref in refs) <= 64  # swept out, not held until their deadline
    assert not fired
    timers.close()


async def test_a_failing_callback_does_not_stop_the_others(caplog):
    loop = asyncio.get_running_loop()
    live: set = set()
    timers = Timers(loop, live)
    fired: list = []

    class Broken(FakeConn):
        def _on_timer(self) -> None:
            raise RuntimeError("bug")

    broken, good = Broken(timers, fired), FakeConn(timers, fired)
    live.update((broken, good))
    now = loop.time()
    broken.arm(now + 0.02)
    good.arm(now + 0.02)
    await asyncio.sleep(0.2)
    assert [c for c, _ in fired] == [good]
    assert "Error in the timeout" in caplog.text
    timers.close()
