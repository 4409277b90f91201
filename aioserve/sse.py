"""Server-Sent Events (the WHATWG ``text/event-stream`` format) over a streamed response.

``sse(iterator)`` wraps an async iterator of events in a ``StreamResponse``: each event is encoded and
written (as its own chunk) the moment it is produced, and while the iterator is idle a ``: ping``
comment goes out every ``ping`` seconds so proxies and load balancers keep the connection open. The
streamed-response path does the rest: a client that goes away cancels the stream, which closes the
generator (its ``finally`` runs).
"""
from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, AsyncIterable, AsyncIterator

import orjson

from .datastructures import HeadersInit
from .response import StreamResponse

EVENT_STREAM = "text/event-stream; charset=utf-8"
PING = b": ping\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class ServerSentEvent:
    """One event: ``data`` (str; dict or list become JSON; a str with newlines becomes several ``data:``
    lines), and the optional ``event`` (its type), ``id`` (the client's resume point, sent back as
    ``Last-Event-ID``) and ``retry`` (the client's reconnection delay, in milliseconds)."""

    __slots__ = ("data", "event", "id", "retry")

    def __init__(self, data: Any = "", event: str | None = None, id: str | int | None = None,
                 retry: int | None = None) -> None:
        for name, value in (("event", event), ("id", id)):
            if value is not None and _LINE_BREAK.search(str(value)):
                raise ValueError(f"an event's {name} cannot contain a line break")
        if id is not None and "\0" in str(id):
            raise ValueError("an event's id cannot contain NUL")
        if retry is not None and (not isinstance(retry, int) or retry < 0):
            raise ValueError("retry must be a non-negative int (milliseconds)")
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def encode(self) -> bytes:
        lines = []
        if self.event is not None:
            lines.append(f"event: {self.event}\n")
        if self.id is not None:
            lines.append(f"id: {self.id}\n")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}\n")
        lines.append(_data_lines(self.data))
        lines.append("\n")
        return "".join(lines).encode("utf-8")

    def __repr__(self) -> str:
        return f"ServerSentEvent(data={self.data!r}, event={self.event!r}, id={self.id!r}, retry={self.retry!r})"


def _data_lines(data: Any) -> str:
    if isinstance(data, (dict, list)):
        return "data: %s\n" % orjson.dumps(data).decode("utf-8")  # JSON has no raw line breaks
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8")
    elif not isinstance(data, str):
        data = str(data)
    return "".join(f"data: {line}\n" for line in _LINE_BREAK.split(data))


def encode_event(item: Any) -> bytes:
    """A yielded item as wire bytes: a ServerSentEvent, or anything else as the data of an event."""
    if isinstance(item, ServerSentEvent):
        return item.encode()
    return b"%s\n" % _data_lines(item).encode("utf-8")


def sse(
    iterator: AsyncIterable[Any], ping: float | None = 15, *, status: int = 200, headers: HeadersInit = None,
) -> StreamResponse:
    """A ``text/event-stream`` response from an async iterable of events (``ServerSentEvent``, str, dict, list).

    ``ping``: seconds of silence after which a ``: ping`` comment is sent (None: never).
    """
    if not hasattr(iterator, "__aiter__"):
        raise TypeError("sse() takes an async iterable (an async generator, for example)")
    if ping is not None and not ping > 0:
        raise ValueError("ping must be > 0 seconds, or None")
    response = StreamResponse(_event_stream(iterator, ping), status, headers, EVENT_STREAM)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


async def _event_stream(events: AsyncIterable[Any], ping: float | None) -> AsyncIterator[bytes]:
    iterator = events.__aiter__()
    try:
        if ping is None:
            async for item in iterator:
                yield encode_event(item)
            return
        # The next event is awaited in a task of its own so that waiting for it can time out (and a
        # ping go out) without cancelling the generator that produces it.
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait((pending,), timeout=ping)
                if not done:
                    yield PING
                    continue
                future, pending = pending, None
                try:
                    item = future.result()
                except StopAsyncIteration:
                    return
                yield encode_event(item)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()  # the CancelledError lands inside the generator: its finally runs
                with contextlib.suppress(BaseException):
                    await pending
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


__all__ = ["EVENT_STREAM", "ServerSentEvent", "encode_event", "sse"]
