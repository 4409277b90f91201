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
in the handler, answered with 500 like any other exception, instead of leaving the client waiting.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .errors import HTTPError

if TYPE_CHECKING:
    from .protocol import HttpProtocol
    from .request import Request


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


def expire(conn: HttpProtocol, req: Request) -> None:
    """Timer callback: the request's deadline has passed."""
    req._timer = None
    if req._status or req._expired:  # already answered (or a streamed answer has started)
        return
    req._expired = True
    rt = conn.state.rt
    if rt is not None and rt.metrics is not None:
        rt.metrics.counters["deadline_cancelled"] += 1
    task = req._task
    if task is not None and not task.done():
        task.cancel()
    transport = conn.transport
    if req._disconnected or transport is None or transport.is_closing():
        conn._drop(req)
        return
    route = req.route
    if route is not None and route.fallback is not None:
        conn.loop.create_task(run_fallback(conn, req))
    else:
        conn._respond(req, rt.deadline_response() if rt is not None else _plain_503())


def expired_before_start(conn: HttpProtocol, req: Request) -> bool:
    """Called as the handler's task starts: if the budget ran out while the task waited for its turn
    (a long loop iteration: many tasks made ready at once), answer now and do not run the handler.
    This is what keeps a loop that is behind from spending CPU on answers nobody will use."""
    if conn.loop.time() < req._deadline:
        return False
    timer = req._timer
    if timer is not None:
        timer.cancel()
    req._task = None  # the task is the caller; it ends by returning
    expire(conn, req)
    return True


async def run_fallback(conn: HttpProtocol, req: Request) -> None:
    route = req.route
    try:
        if route.has_params:
            result: Any = await route.fallback(req, **req.path_params)
        else:
            result = await route.fallback(req)
    except Exception as exc:
        result = await conn.app.handle_error(req, exc)
    if req._status or conn.transport is None:
        return
    if conn.transport.is_closing():
        conn._drop(req)
        return
    try:
        stream = conn._respond(req, result)
    except Exception as exc:
        stream = conn._respond(req, await conn.app.handle_error(req, exc))
    if stream is not None:
        await conn._stream(req, stream)


async def cancelled(conn: HttpProtocol, req: Request, exc: asyncio.CancelledError) -> Any:
    """A handler ended in ``CancelledError``: re-raise for a deadline (answered by ``expire``) or for
    server shutdown (the task itself is being cancelled); otherwise answer it as an error (500)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # 3.11+; before it, assume shutdown
    if req._expired or cancelling is None or cancelling():
        raise exc
    return await conn.app.handle_error(req, exc)


def _plain_503() -> Any:
    from .app import error_response

    return error_response(HTTPError(503, "Deadline exceeded", {"Retry-After": "1"}))
