"""An aioserve ``App`` as an ASGI 3 application (``App.__call__``), for uvicorn, Granian, Hypercorn.

The request is built from the scope and its body read through ``receive()`` (``ASGIChannel``, which
enforces the route's ``max_body_size`` as it reads: 413); the app runs its routes, middleware, error
handling and finishers as under aioserve's own server, and the answer is sent as ASGI messages
(a ``StreamResponse`` chunk by chunk, each ``send()`` waiting as that server makes it wait).

What needs aioserve's server is not here: the connection's fast path, accept batching, admission
before the body (deadlines and shedding), the access log and the server's limits and timeouts.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping, Protocol

from .errors import ClientDisconnected, HTTPError, error_logger
from .forms import DEFAULT_LIMITS, FormLimits
from .request import Request
from .response import MANAGED_HEADERS, Response, StreamResponse
from .results import to_response
from .router import UNSET
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


async def serve_asgi(app: Servable, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        await _http(app, scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(app, receive, send)
    elif kind == "websocket":  # not served outside aioserve's own server yet: refuse the handshake
        await send({"type": "websocket.close", "code": 1000})
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
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    raw_path = scope.get("raw_path") or path.encode("utf-8")
    if root and raw_path.startswith(root.encode("latin-1")):
        raw_path = raw_path[len(root):] or b"/"
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


async def _send_response(response: Response, method: str, send: Send) -> None:
    status = response.status
    head = [(name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.items() if name.lower() not in MANAGED_HEADERS]
    if not isinstance(response, StreamResponse):
        body = response.body
        if status not in NO_BODY_STATUSES:
            head.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
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
