"""Event-loop lag: how late a periodic callback runs.

A callback is scheduled every ``interval`` seconds with ``loop.call_at``; when it runs, ``now -
when_it_was_due`` is the lag: the time the loop spent on other work (a handler burning CPU, a flood
of callbacks) before it could get to it. Every request waiting on this loop waits at least as long, so
this is the first number to look at when p99 jumps. One timer handle per interval, nothing per request.
"""
from __future__ import annotations

import asyncio
from typing import Callable


class LoopLagMonitor:
    __slots__ = ("loop", "interval", "last", "window", "_ring", "_pos", "_due", "_handle", "hooks")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.1, window: float = 10.0) -> None:
        self.loop = loop
        self.interval = interval
        self.last = 0.0
        self._ring = [0.0] * max(1, int(round(window / interval)))
        self._pos = 0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        #: called once per tick, after the lag is recorded (periodic work that needs no timer of its own)
        self.hooks: list[Callable[[], None]] = []

    @property
    def max(self) -> float:
        """The worst lag seen over the window."""
        return max(self._ring)

    def start(self) -> None:
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self.loop.time()
        lag = now - self._due
        if lag < 0.0:
            lag = 0.0
        self.last = lag
        self._ring[self._pos] = lag
        self._pos = (self._pos + 1) % len(self._ring)
        self._due = now + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)
        for hook in self.hooks:
            hook()
