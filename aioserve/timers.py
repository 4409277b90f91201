"""Every connection's deadline on one event-loop timer.

A loop timer per connection costs about 600 bytes (a handle, libuv's timer, their bookkeeping), a
fifth of what an idle keep-alive connection holds. Connections instead put ``(when, seq, conn)`` in
one heap; a single loop timer is armed for the earliest. Deadlines stay exact (the loop timer fires
at the earliest ``when``), and re-arming stays lazy: a connection only schedules when its deadline
moves *earlier* than the one already queued (``conn.timer_at``); a later deadline is picked up when
the earlier entry fires and the connection finds it has time left (``Timed._on_timer``).

An entry is stale when its connection has since scheduled an earlier one or has closed
(``timer_at`` no longer equals ``when``); stale entries are skipped when due, and swept out whenever
they outnumber the connections, as a connection schedules (``schedule``) or closes (``closed``), so a
closed connection, and the requests it still holds, is not kept until its entry falls due (up to the
keep-alive timeout): once no connection is open, none is held at all.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Collection, Protocol

INF = float("inf")

from .errors import error_logger


class Timed(Protocol):
    """A connection, as the timers see it."""

    timer_at: float  # when its entry in the heap is due; INF when it has none

    def on_timer(self) -> None: ...


class Timers:
    __slots__ = ("loop", "live", "heap", "handle", "next_at", "seq")

    def __init__(self, loop: asyncio.AbstractEventLoop, live: Collection[Timed]) -> None:
        self.loop = loop
        self.live = live  # the open connections (for sweeping out stale entries)
        self.heap: list[tuple[float, int, Timed]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.next_at = INF
        self.seq = itertools.count()  # orders entries with the same ``when``

    def schedule(self, conn: Timed, when: float) -> None:
        """Call ``conn.on_timer()`` at ``when`` unless ``conn.timer_at`` has changed by then."""
        heap = self.heap
        heapq.heappush(heap, (when, next(self.seq), conn))
        if len(heap) > 64 and len(heap) > 2 * len(self.live):
            self._sweep()
        if when < self.next_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.loop.call_at(when, self._fire)
        self.next_at = when

    def closed(self, conn: Timed) -> None:
        """``conn`` has closed (it is no longer among the open ones; its entry, if any, is stale): sweep
        if stale entries now outnumber the open connections (amortized O(1): a sweep leaves at most one
        entry per open connection), and always once none is open."""
        heap = self.heap
        if heap and (len(heap) > 2 * len(self.live) + 16 or not self.live):
            self._sweep(conn)
            if not self.heap and self.handle is not None:
                self.handle.cancel()
                self.handle = None
                self.next_at = INF

    def _fire(self) -> None:
        self.handle = None
        self.next_at = INF
        now = self.loop.time()
        heap = self.heap
        due = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap))
        for when, _, conn in due:
            if conn.timer_at == when:  # still the connection's timer
                conn.timer_at = INF
                try:
                    conn.on_timer()
                except Exception:  # one connection's bug must not stop everyone's timeouts
                    error_logger.exception("Error in the timeout of %r", conn)
        if heap and heap[0][0] < self.next_at:
            self._arm(heap[0][0])

    def _sweep(self, gone: Timed | None = None) -> None:
        self.heap = [entry for entry in self.heap if entry[2].timer_at == entry[0] and entry[2] is not gone]
        heapq.heapify(self.heap)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.next_at = INF
        self.heap.clear()
