"""Deadlines: a request's time budget, enforced with one timer handle.

The budget runs from the moment the request head is parsed, so time spent queued behind pipelined
requests, or waiting for the loop, counts. It is the route's ``deadline`` (or the app's), tightened,
never loosened, by the client's ``X-Deadline-Ms`` header (name configurable). When it passes:

* the handler's task is cancelled; a task whose budget ran out before it started (it waited behind
  other tasks in a long loop iteration, where no timer can fire) does not run the handler at all;
* without a fallback, the 503 (``Retry-After``) is emitted at once, from the timer callback, through
  the connection's normal in-order path; a handler that swallows the cancellation cannot delay it;
* with a ``fallback``, the fallback handler runs in a task of its own and its result is the answer
  (e.g. a default score); if it fails, the 503 is sent.

A ``CancelledError`` the handler raises by itself (not our deadline, not server shutdown) is a bug
in the handler: the connection answers it with 500 like any other exception.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exchange import Exchange
from .response import Response
from .shared import Responder

if TYPE_CHECKING:
    from .metrics import Metrics


def header_budget(raw_headers: list[tuple[bytes, bytes]], name: bytes) -> float | None:
    """The budget a client asks for (``name: <milliseconds>``), in seconds; None if absent or invalid."""
    for key, value in raw_headers:
        if key == name:
            try:
                ms = float(value)
            except ValueError:
                return None
            return ms / 1000.0 if ms > 0.0 else None
    return None


class Deadlines:
    """Arms each admitted request's budget and answers for it when it runs out."""

    __slots__ = ("header", "retry_after", "metrics")

    def __init__(self, header: bytes | None, retry_after: int, metrics: Metrics | None) -> None:
        self.header = header  # the request header a client may tighten its budget with
        self.retry_after = retry_after
        self.metrics = metrics

    def budget(self, ex: Exchange, budget: float) -> float:
        """The route's budget, tightened (never loosened) by the client's header: what admission
        control judges the request against, and what ``arm`` starts."""
        if self.header is not None:
            asked = header_budget(ex.request.raw_headers, self.header)
            if asked is not None and asked < budget:
                return asked
        return budget

    def arm(self, conn: Responder, ex: Exchange, budget: float) -> None:
        """Start ``budget`` (seconds, already from ``budget()``) now."""
        ex.arm(conn.loop.time() + budget, self.expire, conn)

    def expire(self, conn: Responder, ex: Exchange) -> None:
        """The budget has run out: cancel the handler, and answer (fallback, or 503) in its place."""
        ex.disarm()
        if ex.status or ex.expired:  # already answered (or a streamed answer has started)
            return
        ex.expired = True
        if self.metrics is not None:
            self.metrics.counters["deadline_cancelled"] += 1
        task = ex.task
        if task is not None and not task.done():
            task.cancel()
        if not conn.can_answer(ex):
            conn.drop(ex)
            return
        route = ex.request.route
        if route is not None and route.fallback is not None:
            ex.task = conn.loop.create_task(self.run_fallback(conn, ex))
        else:
            conn.answer(ex, self.response())

    def before_start(self, conn: Responder, ex: Exchange) -> bool:
        """As the handler's task starts: if the budget ran out while the task waited for its turn
        (a long loop iteration: many tasks made ready at once), answer now and do not run the handler.
        This is what keeps a loop that is behind from spending CPU on answers nobody will use."""
        if conn.loop.time() < ex.deadline:  # type: ignore[operator]
            return True
        ex.disarm()
        ex.task = None  # the task is the caller; it ends by returning
        self.expire(conn, ex)
        return False

    async def run_fallback(self, conn: Responder, ex: Exchange) -> None:
        req = ex.request
        if req is None:  # answered meanwhile (the connection rejected later input)
            return
        route = req.route
        try:
            if route.has_params:
                result: Any = await route.fallback(req, **req.path_params)
            else:
                result = await route.fallback(req)
        except Exception as exc:
            result = await conn.app.handle_error(req, exc)
        conn.answer(ex, result)

    def response(self) -> Response:
        return Response(b"Deadline exceeded", 503, {"Retry-After": str(self.retry_after)},
                        "text/plain; charset=utf-8")
