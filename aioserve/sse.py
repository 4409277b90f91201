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
    ``Last-Event-ID``) and ``retry`` (the client's reconnection delay, in milliseconds).

    ``event``, ``id`` and ``retry`` are checked whenever they are set, in the constructor or later
    (ValueError): a line break (or a NUL in an id) would start another field on the wire, and
    ``retry`` is a non-negative int (not a bool)."""

    __slots__ = ("data", "_event", "_id", "_retry")

    def __init__(self, data: Any = "", event: str | None = None, id: str | int | None = None,
                 retry: int | None = None) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    @property
    def event(self) -> str | None:
        return self._event

    @event.setter
    def event(self, value: str | None) -> None:
        self._event = _field("event", value)

    @property
    def id(self) -> str | int | None:
        return self._id

    @id.setter
    def id(self, value: str | int | None) -> None:
        value = _field("id", value)
        if type(value) is str and "\0" in value:
            raise ValueError("an event's id cannot contain NUL")
        self._id = value

    @property
    def retry(self) -> int | None:
        return self._retry

    @retry.setter
    def retry(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"retry must be a non-negative int (milliseconds), not {value!r}")
        self._retry = value

    def encode(self) -> bytes:
        lines = []
        if self._event is not None:
            lines.append(f"event: {self._event}\n")
        if self._id is not None:
            lines.append(f"id: {self._id}\n")
        if self._retry is not None:
            lines.append(f"retry: {self._retry}\n")
        lines.append(_data_lines(self.data))
        lines.append("\n")
        return "".join(lines).encode("utf-8")

    def __repr__(self) -> str:
        return f"ServerSentEvent(data={self.data!r}, event={self.event!r}, id={self.id!r}, retry={self.retry!r})"


def _field(name: str, value: Any) -> Any:
    """``value`` for the one-line field ``name``: a str or int as it is, anything else as its str (so
    that what is checked is what is sent); ValueError if it holds a line break."""
    if value is None or type(value) is int:
        return value
    if type(value) is not str:
        value = str(value)
    if "\n" in value or "\r" in value:
        raise ValueError(f"an event's {name} cannot contain a line break")
    return value


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
