"""The WebSocket a handler holds: ``@app.websocket(path)`` on ``async def handler(ws, **path_params)``.

It is a thin, typed face on the session that owns the socket (``wsconn.py``): everything about framing,
limits and timers lives there; this module is the API contract (API.md, "WebSocket").
"""
from __future__ import annotations

from typing import Any, Awaitable, Mapping, Protocol

import orjson

from .datastructures import Headers, QueryParams
from .request import Request


class WebSocketSession(Protocol):
    """The socket's owner, as the handler's ``WebSocket`` uses it (``wsconn.WebSocketSession``)."""

    @property
    def closed(self) -> bool: ...

    def accept(self, subprotocol: str | None, headers: Any) -> None: ...

    async def receive(self, end: bool = False) -> str | bytes:
        """The next message; once closed, WebSocketDisconnect (StopAsyncIteration with ``end``)."""
        ...

    async def send(self, data: str | bytes, as_text: bool = False) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...

    def close_info(self) -> tuple[int, str]: ...


class WebSocketDisconnect(Exception):
    """The WebSocket is closed: raised by ``receive*()`` and ``send*()``. A handler may let it escape."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(code, reason)

    def __repr__(self) -> str:
        return f"WebSocketDisconnect(code={self.code}, reason={self.reason!r})"


class WebSocket:
    """One accepted (or about to be accepted) WebSocket connection."""

    __slots__ = ("_session", "_request", "path_params")

    def __init__(self, session: WebSocketSession, request: Request, path_params: dict[str, Any]) -> None:
        self._session = session
        self._request = request
        self.path_params = path_params

    # -- what the client sent in its handshake ----------------------------------------------------
    @property
    def headers(self) -> Headers:
        return self._request.headers

    @property
    def query(self) -> QueryParams:
        return self._request.query

    @property
    def cookies(self) -> dict[str, str]:
        return self._request.cookies

    @property
    def client(self) -> tuple[str, int] | None:
        return self._request.client

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def request(self) -> Request:
        """The handshake request as parsed (raw path and headers): what the ASGI adapter builds its scope from."""
        return self._request

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered (``Sec-WebSocket-Protocol``), in its order."""
        offered: list[str] = []
        for value in self._request.headers.getall("sec-websocket-protocol"):
            offered.extend(p.strip() for p in value.split(",") if p.strip())
        return offered

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closing or closed (the peer's, else ours), else None."""
        session = self._session
        return session.close_info()[0] if session.closed else None

    # -- the conversation ---------------------------------------------------------------------------
    async def accept(self, subprotocol: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        """Answer the handshake with 101; ``subprotocol`` must be one the client offered (else ValueError).

        Raises WebSocketDisconnect (1006) if the client went away before it was called."""
        self._session.accept(subprotocol, headers)

    def receive(self) -> Awaitable[str | bytes]:
        """The next message (str for text, bytes for binary); raises WebSocketDisconnect once closed.

        Like ``send()``, a plain function returning the session's coroutine, for the caller to await."""
        return self._session.receive()

    async def receive_text(self) -> str:
        message = await self._session.receive()
        if not isinstance(message, str):
            raise TypeError("expected a text message, got a binary one")
        return message

    async def receive_bytes(self) -> bytes:
        message = await self._session.receive()
        if not isinstance(message, bytes):
            raise TypeError("expected a binary message, got a text one")
        return message

    async def receive_json(self) -> Any:
        return orjson.loads(await self._session.receive())

    def send(self, data: str | bytes) -> Awaitable[None]:
        """Send a text (str) or binary (bytes) message; waits while the client is not reading.

        A plain function returning the session's coroutine, awaited by the caller: one coroutine
        frame less per message than an ``async def`` wrapper (the echo path's hottest call)."""
        return self._session.send(data)

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` as JSON in a text frame."""
        await self._session.send(orjson.dumps(obj), as_text=True)  # orjson's bytes are UTF-8 already

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code``; before ``accept()`` this refuses the handshake with 403, whatever the code.

        Once accepted, ValueError for a code a close frame must not carry (only 1000-1003, 1007-1014
        and 3000-4999 can be sent) or a reason over 123 bytes of UTF-8."""
        self._session.close(code, reason)

    def __aiter__(self) -> WebSocket:
        return self

    def __anext__(self) -> Awaitable[str | bytes]:
        """Every message until the connection closes, however it closes (never raises for a close).

        The WebSocket is its own iterator, handing out the session's ``receive(end=True)`` coroutine
        (StopAsyncIteration at the close): one coroutine per message, not an async generator's
        ``asend`` wrapper and frame around a second coroutine."""
        return self._session.receive(True)

    def __repr__(self) -> str:
        return f"<WebSocket {self._request.path}>"
