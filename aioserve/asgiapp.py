"""An aioserve ``App`` as an ASGI 3 application (``App.__call__``), for uvicorn, Granian, Hypercorn.

The request is built from the scope and its body read through ``receive()`` (``ASGIChannel``, which
enforces the route's ``max_body_size`` as it reads: 413); the app runs its routes, middleware, error
handling and finishers as under aioserve's own server, and the answer is sent as ASGI messages
(a ``StreamResponse`` chunk by chunk, each ``send()`` waiting as that server makes it wait).

WebSocket scopes run the app's ``@app.websocket`` handlers on an ``ASGIWebSocketSession``: the host
server does the framing, limits and pings. What needs aioserve's server is not here: the connection's fast path, accept batching, admission
before the body (deadlines and shedding), the access log and the server's limits and timeouts.
"""
from __future__ import annotations

import contextlib
from typing import Any, Awaitable, Callable, Mapping, MutableMapping, Protocol

from .errors import ClientDisconnected, HTTPError, error_logger, only
from .forms import DEFAULT_LIMITS, FormLimits
from .request import Request
from .response import MANAGED_HEADERS, Response, StreamResponse
from .results import to_response
from .router import UNSET, WebSocketRoute
from .websocket import WebSocket, WebSocketDisconnect
from .wire import NO_BODY_STATUSES

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
DEFAULT_MAX_BODY = 1024 * 1024  # the server's default max_body_size (config.py)


class Servable(Protocol):
    """The ``App``, as this module needs it (the app layer's ``app.py`` imports this module)."""

    entry: Any
    finish: Any

    def resolve(self, method: str, path: str) -> Any: ...

    async def handle_error(self, request: Request, exc: BaseException) -> Response: ...

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...

    def compile(self) -> None: ...


class ASGIChannel:
    """A request's body and client, read through ASGI ``receive()`` (the ``request.Channel``)."""

    deadline: float | None = None
    peer_closed = False  # an ASGI server reports only a client gone (http.disconnect): ``gone``

    def __init__(self, receive: Receive, limit: int | None, client: tuple[str, int] | None) -> None:
        self.receive = receive
        self.limit = limit
        self.client = client
        self.received = 0
        self.complete = False
        self.gone = False

    @property
    def disconnected(self) -> bool:
        return self.gone

    @property
    def form_limits(self) -> FormLimits:
        return DEFAULT_LIMITS

    def peer(self) -> tuple[str, int] | None:
        return self.client

    async def read_chunks(self) -> list[bytes]:
        while not self.complete:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientDisconnected("client disconnected before sending the whole body")
            body = message.get("body", b"")
            self.complete = not message.get("more_body", False)
            self.received += len(body)
            if self.limit is not None and self.received > self.limit:
                raise HTTPError(413, f"Request body is larger than the limit of {self.limit} bytes")
            if body:
                return [body]
        return []

    async def read_body(self) -> bytes:
        pieces = []
        while True:
            chunks = await self.read_chunks()
            if not chunks:
                return b"".join(pieces)
            pieces.extend(chunks)

    async def wait_disconnected(self) -> None:
        while not self.gone:
            if (await self.receive())["type"] == "http.disconnect":
                self.gone = True


def _disconnect(exc: BaseException) -> bool:
    return isinstance(exc, WebSocketDisconnect)


async def serve_asgi(app: Servable, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        await _http(app, scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(app, receive, send)
    elif kind == "websocket":
        await _websocket(app, scope, receive, send)
    else:
        raise RuntimeError(f"aioserve App cannot serve ASGI scope type {kind!r}")


async def _lifespan(app: Servable, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await app.startup()
            except Exception as exc:
                error_logger.exception("startup hook failed")
                await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await app.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(app: Servable, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    method = scope["method"]
    path, raw_path = _app_path(scope)
    route, values, error = app.resolve(method, path)
    limit = DEFAULT_MAX_BODY if route is None or route.max_body_size is UNSET else route.max_body_size
    headers = [(bytes(k).lower(), bytes(v)) for k, v in scope.get("headers", ())]
    client = scope.get("client")
    channel = ASGIChannel(receive, limit, tuple(client) if client else None)  # type: ignore[arg-type]
    request = Request(channel, method, raw_path, scope.get("query_string", b""), path, headers,
                      scope.get("http_version", "1.1"), True, None, scope.get("scheme", "http"), route, values)
    if limit is not None:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            error = HTTPError(413, f"Request body is larger than the limit of {limit} bytes")
            route = None
    try:
        if route is None:
            result: Any = await app.handle_error(request, error or HTTPError(404))
        elif app.entry is not None:
            result = await app.entry(request)
        else:
            result = route.handler(request, **request.path_params)
            if hasattr(result, "__await__"):
                result = await result
    except Exception as exc:
        if channel.gone:  # the client left (the handler heard ClientDisconnected): nobody to answer or blame
            if request.holds_files:
                await request.aclose()
            return
        result = await app.handle_error(request, exc)
    response = to_response(result)
    if app.finish is not None:
        response = app.finish(request, response)
    try:
        await _send_response(response, method, send)
    except OSError:  # the server says the client is gone (uvicorn's ClientDisconnected is one)
        pass
    finally:
        if request.holds_files:
            await request.aclose()


def _app_path(scope: MutableMapping[str, Any]) -> tuple[str, bytes]:
    """The path below ``root_path``, decoded and raw: what the app's routes match."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    raw_path = scope.get("raw_path") or path.encode("utf-8")
    if root and raw_path.startswith(root.encode("latin-1")):
        raw_path = raw_path[len(root):] or b"/"
    return path, raw_path


async def _send_response(response: Response, method: str, send: Send) -> None:
    status = response.status
    head = [(name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.items() if name.lower() not in MANAGED_HEADERS]
    if not isinstance(response, StreamResponse):
        body = response.body
        if status in NO_BODY_STATUSES:  # no body, whatever the Response holds (RFC 9110 15.3.5, 15.4.5)
            body = b""
        else:
            head.append((b"content-length", b"%d" % len(body)))
            if method == "HEAD":  # the length a GET would have, and no body
                body = b""
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})
        return
    if response.content_length is not None and status not in NO_BODY_STATUSES:
        head.append((b"content-length", b"%d" % response.content_length))
    iterator = response.iterator
    try:
        await send({"type": "http.response.start", "status": status, "headers": head})
        if method != "HEAD" and status not in NO_BODY_STATUSES:
            async for piece in iterator:
                if type(piece) is str:
                    piece = piece.encode("utf-8")
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


# -- WebSocket --------------------------------------------------------------------------------------
class ASGIWebSocketSession:
    """The ``WebSocket``'s session (``websocket.WebSocketSession``) spoken as ASGI ``websocket.*`` events.

    Accepting and closing are sends, so they are awaited by ``ASGIWebSocket`` rather than called."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.accepted = False
        self.finished = False  # closed by either side, or refused
        self.info = (1006, "")

    @property
    def closed(self) -> bool:
        return self.finished

    def accept(self, subprotocol: str | None, headers: Any) -> None:  # the protocol's; see ASGIWebSocket
        raise RuntimeError("ASGIWebSocketSession is accepted with open()")

    async def open(self, subprotocol: str | None, headers: Any) -> None:
        if self.accepted or self.finished:
            raise RuntimeError("accept() called twice, or after the WebSocket was closed")
        items = headers.items() if hasattr(headers, "items") else headers or ()
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol,
                          "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items]})
        self.accepted = True

    async def receive(self, end: bool = False) -> str | bytes:
        if not self.accepted and not self.finished:
            raise RuntimeError("receive() before accept()")
        if not self.finished:
            message = await self._receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                return text if text is not None else message.get("bytes") or b""
            self.finished = True  # websocket.disconnect
            self.info = (message.get("code", 1005), message.get("reason") or "")
        if end:  # async for: the close ends the messages
            raise StopAsyncIteration
        raise WebSocketDisconnect(*self.info)

    async def send(self, data: str | bytes, as_text: bool = False) -> None:
        if not self.accepted and not self.finished:
            raise RuntimeError("send() before accept()")
        if self.finished:
            raise WebSocketDisconnect(*self.info)
        if isinstance(data, str) or as_text:
            message = {"type": "websocket.send", "text": data if isinstance(data, str) else bytes(data).decode("utf-8")}
        elif isinstance(data, (bytes, bytearray, memoryview)):
            message = {"type": "websocket.send", "bytes": bytes(data)}
        else:
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}")
        try:
            await self._send(message)
        except OSError:  # the server says the client is gone
            self.finished = True
            raise WebSocketDisconnect(*self.info) from None

    def close(self, code: int = 1000, reason: str = "") -> None:  # the protocol's; see ASGIWebSocket
        raise RuntimeError("ASGIWebSocketSession is closed with shut()")

    async def shut(self, code: int = 1000, reason: str = "") -> None:
        """Close (before accept: the host server refuses the handshake with 403)."""
        if self.finished:
            return
        self.finished = True
        self.info = (code, reason)
        with contextlib.suppress(OSError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def close_info(self) -> tuple[int, str]:
        return self.info


class ASGIWebSocket(WebSocket):
    """The handler's ``WebSocket`` under an ASGI server: accept and close are awaited sends."""

    __slots__ = ()
    _session: ASGIWebSocketSession

    async def accept(self, subprotocol: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client "
                             f"(offered: {', '.join(self.subprotocols) or 'none'})")
        await self._session.open(subprotocol, headers)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._session.shut(code, reason)


async def _websocket(app: Servable, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    path, raw_path = _app_path(scope)
    route, values, _ = app.resolve("GET", path)
    if (await receive())["type"] != "websocket.connect":
        return
    session = ASGIWebSocketSession(receive, send)
    if type(route) is not WebSocketRoute:
        await session.shut()  # no WebSocket here: the handshake is refused (403)
        return
    headers = [(bytes(k).lower(), bytes(v)) for k, v in scope.get("headers", ())]
    client = scope.get("client")
    channel = ASGIChannel(receive, 0, tuple(client) if client else None)  # type: ignore[arg-type]
    channel.complete = True  # a handshake has no body
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = Request(channel, "GET", raw_path, scope.get("query_string", b""), path, headers,
                      scope.get("http_version", "1.1"), True, None, scheme, route, values)
    ws = ASGIWebSocket(session, request, dict(zip(route.param_names, values)) if values else {})
    code = 1000
    try:
        if not values:
            await route.websocket(ws)
        elif route.positional:
            await route.websocket(ws, *values)
        else:
            await route.websocket(ws, **ws.path_params)
    except Exception as exc:  # WebSocketDisconnect escaping ends quietly, bare or wrapped by task groups
        if not only(exc, _disconnect):
            error_logger.exception("Exception in WebSocket handler %s", path)
            code = 1011
    await session.shut(code)
