"""Waiting on state that has no event to await, and measuring how long something took."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

POLL_INTERVAL = 0.005


class NotReached(AssertionError):
    """``wait_until``'s condition did not hold in time."""


async def wait_until(predicate: Callable[[], object], timeout: float = 3.0, message: str = "") -> None:
    """Return once ``predicate()`` is true; raise ``NotReached`` if it is still false after ``timeout``.

    For state the server exposes without an event (connection counts, counters a handler bumps).
    Polls on the running loop, bounded in count and time; prefer an ``asyncio.Event`` where one exists.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    for _ in range(int(timeout / POLL_INTERVAL) + 2):
        if predicate():
            return
        if loop.time() >= end:
            break
        await asyncio.sleep(POLL_INTERVAL)
    if predicate():
        return
    raise NotReached(message or f"condition not reached within {timeout}s")


@dataclass
class Timed:
    """``Timed().elapsed``: seconds of wall time since it was made."""

    start: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
