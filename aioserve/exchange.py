"""One request's life on its connection, from its parsed head to its answer written.

The connection (``connection.py``) makes an ``Exchange`` for every request head and keeps the ones
not yet written in its pipeline, in request order. The exchange owns what belongs to that one request
and nothing else: the handler's task, the answer's status, bytes and close flag, its turn to write,
the body as it arrives (it is the ``Request``'s ``Channel``), its time budget and the accounting the
real-time observer keeps. The connection and the observer read and write these fields; the user only
ever sees the ``Request``.

What every exchange sets is in slots; what only some need (a body, a budget, a turn to wait for)
starts as a class default and is stored only when set.
"""
from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable, Protocol

from .errors import ClientDisconnected, HTTPError
from .forms import FormLimits
from .request import Request


class Carrier(Protocol):
    """The connection, as an exchange needs it: body flow control and the peer's address."""

    loop: asyncio.AbstractEventLoop
    form_limits: FormLimits  # what request.form() allows by default (the server's settings)

    def body_wanted(self, exchange: Exchange) -> None: ...

    def body_consumed(self, exchange: Exchange) -> None: ...

    def peer(self) -> tuple[str, int] | None: ...

    def answer(self, exchange: Exchange, result: Any) -> None: ...


class Exchange:
    # Slots: what every exchange sets, and what the common path reads (a class default is read through
    # the type, which Python 3.11 cannot specialize: several times the cost of a slot).
    __slots__ = ("conn", "request", "keep_alive", "status", "complete", "started", "expect_continue", "waiter",
                 "__dict__")

    # -- set only when needed (class defaults until then) ----------------------------------------------
    route_error: HTTPError | None = None  # 404 or 405, answered by the app's error handling
    # the body, as the connection delivers it
    max_body_size: int | None = None  # the route's (or server's) limit; set when a body is announced
    chunks: list[bytes] | tuple[()] = ()  # delivered, not yet read
    received = 0
    body_error: Exception | None = None  # raised to the reader (e.g. the 413 the connection answered)
    disconnected = False  # the client went away before this exchange was answered
    peer_closed = False  # the client half-closed (EOF) with this exchange outstanding
    continue_due = False  # a 100 Continue is owed as soon as the earlier answers are written
    # answering
    out: bytes | tuple[bytes, bytes] | None = None  # the answer, waiting for its turn in the pipeline
    close = False  # close the connection after this answer
    close_delimited = False  # a streamed body that only the connection's close ends (HTTP/1.0, no length)
    logged = False  # its access-log line is written, though it was never answered whole (a client gone)
    streamed: Any = None  # the StreamResponse whose body is being written (its head is out)
    sent = 0  # bytes of a streamed body written so far
    ending = False  # graceful shutdown is ending its event stream (a cancel that ends it whole)
    task: asyncio.Task[Any] | None = None  # the handler's (or the stream's) task, when it has one
    turn: asyncio.Future[None] | None = None  # a streamed answer waits here for the earlier ones
    context: contextvars.Context | None = None  # the context an inline handler ran in
    # the budget (realtime observer)
    deadline: float | None = None  # loop time when the budget runs out
    deadline_timer: asyncio.TimerHandle | None = None
    expired = False  # the budget ran out before the answer
    accounted = 0  # the observer's bookkeeping: 0 not counted, 1 in flight, 2 finished
    began = 0.0  # perf_counter() when its handler started (admission control only)

    def __init__(self, conn: Carrier, keep_alive: bool) -> None:
        self.conn = conn
        self.request: Request = None  # type: ignore[assignment]  # set by the connection right after
        self.keep_alive = keep_alive  # False once this must be the connection's last answer
        self.status = 0  # set when the answer is committed (its head written or queued)
        self.complete = False  # the whole request, body included, has been read
        # The one clock stamp of the request: perf_counter() when its head was parsed, when the
        # access log or the real-time observer needs it (0.0 otherwise).
        self.started = 0.0
        self.expect_continue = False  # the client waits for "100 Continue" before sending the body
        self.waiter: asyncio.Future[None] | None = None  # a reader waiting for more body

    # -- the Request's Channel -----------------------------------------------------------------------
    def peer(self) -> tuple[str, int] | None:
        return self.conn.peer()

    @property
    def form_limits(self) -> FormLimits:
        return self.conn.form_limits

    async def read_body(self) -> bytes:
        while not self.complete:
            await self._wait()
        chunks = self.chunks
        if not chunks:
            return b""
        self.chunks = []
        self.conn.body_consumed(self)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read_chunks(self) -> list[bytes]:
        """The body pieces that have arrived (waiting for some); ``[]`` once the body is complete."""
        while True:
            chunks = self.chunks
            if chunks:
                self.chunks = []
                self.conn.body_consumed(self)
                return chunks  # type: ignore[return-value]
            if self.complete:
                return []
            await self._wait()

    async def _wait(self) -> None:
        if self.body_error is not None:
            raise self.body_error
        if self.disconnected:
            raise ClientDisconnected("client disconnected before sending the whole body")
        waiter = self.waiter = self.conn.loop.create_future()
        self.conn.body_wanted(self)
        try:
            await waiter
        finally:
            self.waiter = None
        if self.body_error is not None:
            raise self.body_error
        if self.disconnected and not self.complete:
            raise ClientDisconnected("client disconnected before sending the whole body")

    async def wait_disconnected(self) -> None:
        """Return once the client has gone away (or sent EOF); body arrivals wake it too, so it looks again."""
        while not (self.disconnected or self.peer_closed):
            waiter = self.waiter = self.conn.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    def wake(self) -> None:
        """More body, its end, an error or a disconnect: let a waiting reader look again."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def answer_now(self, result: Any) -> asyncio.Task[None] | None:
        """``Request.answer_now``: the connection's one answer path, from inside the handler."""
        handler = self.task
        self.conn.answer(self, result)
        task = self.task
        return task if task is not handler else None  # a stream's (or an error answer's) task

    # -- the time budget -------------------------------------------------------------------------------
    def arm(self, when: float, on_expiry: Callable[[Any, Exchange], None], conn: Any) -> None:
        """Set the budget to run out at ``when`` (loop time), calling ``on_expiry(conn, self)`` then."""
        self.deadline = when
        self.deadline_timer = self.conn.loop.call_at(when, on_expiry, conn, self)

    def disarm(self) -> None:
        timer = self.deadline_timer
        if timer is not None:
            timer.cancel()
            self.deadline_timer = None

    def __repr__(self) -> str:
        request = self.request
        what = f"{request.method} {request.path}" if request is not None else "-"
        return f"<Exchange {what} status={self.status}>"
