"""Serve an ASGI 3 application (Starlette, FastAPI, Django...) on aioserve's connection, unchanged.

``asgi_app(callable)`` wraps the ASGI callable in an ordinary ``App`` with one catch-all route, so
everything the server has (parser, limits, timeouts, proxy headers, access log, deadlines, shedding,
metrics, graceful shutdown) applies without a second code path in the connection. Per request:

- the scope is built from the ``Request`` (headers as received, names lowercased);
- ``receive()`` hands out the body as the connection reads it (``request.stream()``: bounded, flow
  controlled), then waits for the client to go away (``http.disconnect``);
- the app runs in a task of its own; the route's handler waits for ``http.response.start`` and returns
  a ``Response`` when the whole body came with it, else a ``StreamResponse`` fed by a bounded queue,
  so ``send()`` waits while the client is slow;
- lifespan runs in the app's startup and shutdown hooks, and its ``state`` is copied into each scope;
- ``websocket`` scopes: GET on the catch-all is a ``WebSocketRoute`` whose plain HTTP answer is the
  app's; an upgrade goes to the WebSocket session (wsconn.py) and its events become ``websocket.*``.

A misbehaving app (raises, returns without a response, sends body before start, starts twice) gets
one log line naming it and a 500 when nothing was sent yet; after that the connection is closed.
"""
from __future__ import annotations

import asyncio
import logging
from asyncio import current_task
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, MutableMapping

from .app import App
from .errors import ClientDisconnected, HTTPError, StreamCut, error_logger, only
from .request import Request
from .response import RawResponse, Response, StreamResponse
from .router import Route, Router
from .websocket import WebSocket, WebSocketDisconnect
from .wire import TEXT_TYPE, check_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")  # registered; others: resolve()
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
QUEUED_CHUNKS = 4  # body messages an app may send ahead of a slow client before send() waits
FILE_CHUNK = 64 * 1024
logger = logging.getLogger("aioserve")


class ClientGone(OSError):
    """Raised by ``send()`` once the client is gone (an ``OSError``, as the ASGI spec asks)."""

    cycle: Any = None  # the WebSocket conversation whose send() raised it


class LifespanError(RuntimeError):
    """The ASGI app's lifespan startup failed (``lifespan.startup.failed``, or it raised with ``on``)."""


def is_asgi(obj: Any) -> bool:
    """An object the CLI should serve as ASGI 3: callable, and not an aioserve App or Router."""
    return callable(obj) and not isinstance(obj, (App, Router)) and not isinstance(obj, type)


def asgi_app(app: ASGIApp, *, root_path: str = "", lifespan: str = "auto", **options: Any) -> App:
    """An ``App`` that serves the ASGI 3 callable ``app``; ``options`` go to ``App()`` (deadline...)."""
    if lifespan not in ("auto", "on", "off"):
        raise ValueError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
    adapter = ASGIAdapter(app, root_path, lifespan)
    wrapper = _ASGIHost(**options)
    # GET and the WebSocket handshake share the catch-all: one WebSocketRoute whose plain HTTP answer
    # is the app's, instead of 426; the other methods are an ordinary route on the same patterns.
    others = [method for method in METHODS if method != "GET"]
    catch_all = []
    for pattern in ("/", "/{asgi_path:path}"):
        catch_all.append(wrapper.add_route(pattern, adapter.handle, others, name=adapter.name))
        wrapper.websocket(pattern, name=adapter.name, http=adapter.handle)(adapter.websocket)
    wrapper.catch_all = frozenset(catch_all)
    wrapper.on_startup(adapter.startup)
    wrapper.on_shutdown(adapter.shutdown)
    return wrapper


class _ASGIHost(App):
    """The ``App`` serving an ASGI app: any method the connection accepts (PROPFIND, PURGE, QUERY...)
    reaches the app, which says 405 itself (the routes the server adds, /metrics say, keep theirs)."""

    catch_all: frozenset[Route] = frozenset()  # the catch-all's routes (for the methods but GET)

    def resolve(self, method: str, path: str) -> tuple[Route | None, list[Any] | tuple[()], HTTPError | None]:
        # App.resolve's lookup, so a path below / (not a static route) costs no extra call; what is not
        # found here (404, another route's 405, a CORS preflight) is App.resolve's to answer.
        found = self.tree.match(path)
        if found is not None:
            routes = found[0].routes
            route = routes.get(method)
            if route is not None or routes.get("POST") in self.catch_all:
                return route or routes["POST"], found[1], None  # type: ignore[return-value]
        return App.resolve(self, method, path)


class ASGIAdapter:
    """The catch-all handler and the lifespan of one ASGI app."""

    def __init__(self, app: ASGIApp, root_path: str, lifespan: str) -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")
        self.lifespan = lifespan
        self.name = getattr(app, "__qualname__", None) or type(app).__qualname__
        self.state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None
        # The serving loop, set at startup, so finding a request's task needs no get_running_loop()
        # (on 3.11 that is a getpid() system call, 2% of a plaintext request's time).
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- lifespan ------------------------------------------------------------------------------------
    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.lifespan == "off":
            return
        cycle = self._lifespan = _Lifespan(self.app, self.state)
        error = await cycle.startup()
        if error is None:
            return
        if cycle.unsupported and self.lifespan == "auto":
            logger.info("ASGI app %s does not support lifespan; serving without it", self.name)
            self._lifespan = None
            return
        raise LifespanError(f"ASGI lifespan startup of {self.name} failed: {error}")

    async def shutdown(self) -> None:
        if self._lifespan is not None:
            error = await self._lifespan.shutdown()
            if error:
                error_logger.error("ASGI lifespan shutdown of %s failed: %s", self.name, error)

    # -- HTTP ----------------------------------------------------------------------------------------
    async def handle(self, request: Request, asgi_path: str = "") -> Response | None:
        """Run the app in the request's own task; ``send()`` answers through the connection."""
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": request.scheme,
            "path": root + request.path if root else request.path,
            "raw_path": root.encode("latin-1") + request.raw_path if root else request.raw_path,
            "query_string": request.query_string,
            "root_path": root,
            "headers": request.raw_headers,
            "client": request.client,
            "server": None,
            "extensions": {"http.response.pathsend": {}},
        }
        if self.state:
            scope["state"] = self.state.copy()
        request.metrics_label = request.method  # until the app's route template is known (_route_label)
        cycle = _Cycle(request, self.name, current_task(self.loop), scope)  # None: the running loop
        try:
            app = self.app  # loaded as an attribute: a method-call load of it is not specialized
            await app(scope, cycle.receive, cycle.send)
        except asyncio.CancelledError:  # a deadline, shutdown, or the client left mid-stream
            cycle.fail(_AppFailed(f"ASGI app {self.name} was cancelled"))
            cycle.hang_up()
            raise
        except Exception as exc:
            if cycle.gone:  # the client left mid-response: send() raised OSError, as the spec says it may
                cycle.fail(_AppFailed("the client went away"))
            elif not cycle.status:  # nothing started: a 500 says so
                request.metrics_label = _route_label(scope, request.method)
                error_logger.error("ASGI app %s raised %s for %s %s", self.name, type(exc).__name__,
                                   request.method, request.path, exc_info=exc)
                return cycle.error_500()
            else:
                error_logger.error("ASGI app %s raised %s for %s %s after starting its response", self.name,
                                   type(exc).__name__, request.method, request.path, exc_info=exc)
                if not cycle.cut():
                    return cycle.error_500()
        else:
            if not cycle.ended:  # no response, or not all of it: the app's fault, unless the client left
                log = logger.debug if cycle.gone or request.is_disconnected else error_logger.error
                if not cycle.status:
                    request.metrics_label = _route_label(scope, request.method)
                    log("ASGI app %s returned without sending a response to %s %s", self.name, request.method,
                        request.path)
                    return cycle.error_500()
                log("ASGI app %s returned without completing its response to %s %s", self.name, request.method,
                    request.path)
                if not cycle.cut():
                    return cycle.error_500()
        stream = cycle.stream
        if stream is not None and not stream.done():  # its answer is still being written: wait for it
            await asyncio.wait((stream,))
        return None

    # -- WebSocket -------------------------------------------------------------------------------------
    async def websocket(self, ws: WebSocket, asgi_path: str = "") -> None:
        """A ``websocket`` scope, spoken through the WebSocket session (wsconn.py): it owns the framing,
        limits, pings and close handshake; an app that raises is logged and closed with 1011 (or
        refused with 500 before accept), one that closes before accept is refused with 403. The
        ``ClientGone`` its ``send()`` raised once the client left ends it quietly if the app lets it
        escape, as a ``WebSocketDisconnect`` escaping a native handler does."""
        request = ws.request
        root = self.root_path
        scope = {
            "type": "websocket",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "scheme": "wss" if request.scheme == "https" else "ws",
            "path": root + request.path if root else request.path,
            "raw_path": root.encode("latin-1") + request.raw_path if root else request.raw_path,
            "query_string": request.query_string,
            "root_path": root,
            "headers": request.raw_headers,
            "client": request.client,
            "server": None,
            "subprotocols": ws.subprotocols,
            "extensions": {},
        }
        if self.state:
            scope["state"] = self.state.copy()
        cycle = _WebSocketCycle(ws)
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception as exc:  # bare, or wrapped by the app's task groups (anyio's, asyncio's)
            if not only(exc, lambda leaf: isinstance(leaf, ClientGone) and leaf.cycle is cycle):
                raise


class _WebSocketCycle:
    """ASGI ``websocket.*`` events over an aioserve ``WebSocket``."""

    __slots__ = ("ws", "connected")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.connected = False

    def _gone(self, exc: WebSocketDisconnect) -> ClientGone:
        """``send()`` on a closed WebSocket raises an ``OSError`` subclass (ASGI spec), whatever was sent;
        marked as this conversation's, so one from another client's send() escaping here is still an error."""
        gone = ClientGone(f"the WebSocket is closed ({exc.code})")
        gone.cycle = self
        return gone

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        try:
            data = await self.ws.receive()
        except WebSocketDisconnect as exc:
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if type(data) is str:
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        ws = self.ws
        if kind == "websocket.send":
            text = message.get("text")
            try:
                await ws.send(text if text is not None else message.get("bytes") or b"")
            except WebSocketDisconnect as exc:
                raise self._gone(exc) from None
        elif kind == "websocket.accept":
            headers = [(_text(name), _text(value)) for name, value in message.get("headers", ())]
            try:
                await ws.accept(message.get("subprotocol"), headers)
            except WebSocketDisconnect as exc:  # the client left before the app accepted
                raise self._gone(exc) from None
        elif kind == "websocket.close":
            try:
                await ws.close(message.get("code", 1000), message.get("reason") or "")
            except WebSocketDisconnect as exc:
                raise self._gone(exc) from None
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket")


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


class _AppFailed(StreamCut):
    """The app's answer is cut short: what went wrong is logged here, once, naming the app (or is the
    client's leaving, which is no error)."""


def _route_label(scope: Scope, method: str) -> str:
    """The metrics label of an ASGI request: the template of the route the framework matched, which
    Starlette and FastAPI put in ``scope["route"]`` (bounded by the app's routes), else the method."""
    path = getattr(scope.get("route"), "path", None)
    return path if type(path) is str else method


def _error_500() -> Response:
    return Response(b"Internal Server Error", 500, content_type=TEXT_TYPE)


# Response header lines already rendered, by the (name, value) pair the app sent: apps send a handful.
# An int is a Content-Length value, b"" a header the server writes itself, _CLOSE "Connection: close"
# (a str: no Content-Length value can be taken for it).
_LINES: dict[tuple[bytes, bytes], bytes | int | str] = {}
_LINES_MAX = 1024
_CLOSE = "close"
_DROPPED = frozenset({b"transfer-encoding", b"server", b"date", b"connection", b"keep-alive"})


def _content_length(value: str) -> int:
    """An app's Content-Length: ASCII digits only (``int()`` would take "-1", "+5", " 7" or "1_0")."""
    if not (value.isdigit() and value.isascii()):
        raise ValueError(f"invalid Content-Length {value!r} in the response")
    return int(value)


def _line(name: bytes | str, value: bytes | str) -> bytes | int | str:
    """One response header from the app, checked and rendered (or what it means to the server)."""
    name = name.decode("latin-1") if isinstance(name, (bytes, bytearray)) else name
    value = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value
    check_header(name, value)
    lower = name.lower().encode("latin-1")
    if lower == b"content-length":
        return _content_length(value)
    if lower == b"connection" and "close" in value.lower():
        return _CLOSE
    if lower in _DROPPED:
        return b""
    return b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))


class _Cycle:
    """One HTTP request's ASGI conversation: the receive side, the send side, and the body queue.

    The app runs in the request's own task. A complete body (``more_body`` False on the first body
    message) is answered from ``send()`` at once, head and body in one write; otherwise ``send()``
    starts a streamed answer (a task of the connection's) fed by a bounded queue.
    """

    # What every request sets is in slots; what only a streamed answer or a failure needs starts as a
    # class default and is stored only when set (as in ``Exchange``).
    __slots__ = ("request", "name", "status", "headers", "ended", "answered", "body_done", "task", "scope",
                 "gone", "discard", "__dict__")

    length: int | None = None  # Content-Length the app announced (a streamed answer)
    queue: deque[bytes] | tuple[()] = ()  # a streamed answer's body messages, not yet written
    error: BaseException | None = None  # the app failed after start: cut the message
    reader: asyncio.Future[None] | None = None  # the stream waiting for body
    writer: asyncio.Future[None] | None = None  # the app waiting for room
    path: str | None = None  # http.response.pathsend
    listener: asyncio.Future[None] | None = None  # watches for the client to go, once receive() waited
    listening = 0  # receive() calls waiting (for body, or on the watcher): they hear http.disconnect
    stream: asyncio.Task[None] | None = None  # the connection's task writing a streamed answer

    def __init__(self, request: Request, name: str, task: asyncio.Task[Any] | None, scope: Scope) -> None:
        self.request = request
        self.scope = scope  # the app's route template is read from it when the answer goes out
        self.name = name
        self.status = 0
        self.headers: Any = ()  # as the app sent them, until the first body message
        self.ended = False  # more_body=False seen: the response is complete
        self.answered = False  # the answer (whole, or its stream) went to the connection
        self.body_done = False
        self.task = task  # the app's task (the request's own): cancelled when the client leaves a stream
        self.gone = False  # the client went away (the stream was closed)
        self.discard = False  # HEAD of a streamed answer: the connection sends no body, none is kept

    def error_500(self) -> Response:
        """The answer for an app that sent nothing it could: a receive() still waiting hears http.disconnect."""
        self.hang_up()
        return _error_500()

    def fail(self, failed: _AppFailed) -> None:
        self.error = failed
        self._wake_reader()

    def cut(self) -> bool:
        """The app failed after starting its response: the client sees its head, then the connection close.
        False when that head is one the server will not send (a bad header): nothing was, so a 500 can be."""
        if not self.answered:
            try:
                self._start_stream()
            except Exception:
                return False
        self.fail(_AppFailed("the app failed"))
        return True

    # -- receive ---------------------------------------------------------------------------------------
    async def receive(self) -> Message:
        if self.ended and not self.body_done:  # the response is sent: http.disconnect (ASGI spec), never a
            self.body_done = True              # body cut short (what arrives after an answer is dropped)
            return {"type": "http.disconnect"}
        if not self.body_done:
            self.listening += 1  # waiting here too, the app hears http.disconnect if the client leaves
            try:
                chunks = await self.request.chunks()
            except (ClientDisconnected, HTTPError):  # gone, or answered already (413)
                self.body_done = True
                self.gone = True
                return {"type": "http.disconnect"}
            finally:
                self.listening -= 1
            if not chunks:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunks[0] if len(chunks) == 1 else b"".join(chunks),
                    "more_body": True}
        if not self.gone and not self.ended:
            if self.request.is_disconnected:  # said at once: Starlette asks from a scope already cancelled
                self.gone = True
                return {"type": "http.disconnect"}
            # One watcher per request, kept when a receive() is cancelled (Starlette's is_disconnected()
            # polls so), so the next one knows at once; it ends when the client goes or hang_up() runs.
            watcher = self.listener
            if watcher is None:
                watcher = self.listener = asyncio.ensure_future(self.request.wait_disconnected())
            if not watcher.done():
                self.listening += 1
                try:
                    await asyncio.wait((watcher,))
                finally:
                    self.listening -= 1
        return {"type": "http.disconnect"}

    def hang_up(self, _: object = None) -> None:
        """The response is sent, or never will be: a receive() waiting hears http.disconnect (www.rst: "after
        a response has been sent"), and the watcher stops. Also the done callback of a streamed answer."""
        watcher = self.listener
        if watcher is not None and not watcher.done():
            watcher.cancel()

    # -- send ------------------------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.status or self.ended:
                self._misuse("sent http.response.body " + ("before http.response.start" if not self.status
                                                           else "after the response was complete"))
            if self.gone:
                raise ClientGone("the client went away")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not more:
                self.ended = True
            if self.discard:
                return
            if not self.answered:
                try:
                    if not more:  # the whole body in one message: answered now, head and body in one write
                        self._answer(body if type(body) is bytes else bytes(body))
                        return
                    self._start_stream()
                except Exception:
                    self._withdraw()
                    raise
            if body:
                self.queue.append(bytes(body))
            self._wake_reader()
            while len(self.queue) >= QUEUED_CHUNKS and not self.gone:
                self.writer = asyncio.get_running_loop().create_future()
                await self.writer
            if self.gone and more:
                raise ClientGone("the client went away")
        elif kind == "http.response.start":
            if self.status:
                self._misuse("sent http.response.start twice")
            self.headers = message.get("headers", ())
            self.status = message["status"]
        elif kind == "http.response.pathsend":
            if not self.status or self.ended:
                self._misuse("sent http.response.pathsend out of order")
            self.path = message["path"]
            self.ended = True
            if not self.answered:
                try:
                    self._start_stream()
                except Exception:
                    self._withdraw()
                    raise
            self._wake_reader()
        else:
            self._misuse(f"sent an unknown message type {kind!r}")

    def _withdraw(self) -> None:
        """The response cannot be sent as it stands (a bad header or length), and nothing was: as if it never
        started, so the app's exception (or its return) is answered with a 500."""
        self.status = 0
        self.ended = False

    def _misuse(self, what: str) -> None:
        raise RuntimeError(f"ASGI app {self.name} {what}")

    # -- the response --------------------------------------------------------------------------------------
    def _answer(self, body: bytes) -> None:
        """A complete response: its header lines rendered (from a cache), answered through the connection."""
        lines = []
        length = None
        close = False
        cache = _LINES
        for pair in self.headers:
            try:
                line = cache[pair]
            except (KeyError, TypeError):  # a new pair, or one sent as a list (unhashable)
                line = _line(*pair)
                if type(pair) is tuple and len(cache) < _LINES_MAX:
                    cache[pair] = line
            if type(line) is bytes:
                lines.append(line)
            elif line is _CLOSE:
                close = True
            else:
                length = line
        request = self.request
        response: Response
        if length is None or length == len(body):
            response = RawResponse(body, self.status, b"".join(lines), close)
        elif request.method == "HEAD":  # the length a GET would have (RFC 9110 9.3.2), not the empty body's
            response = StreamResponse(_once(b""), self.status, self._str_headers(), content_length=length)
        else:  # nothing is sent yet: the app gets its 500 rather than the client a mis-framed message
            raise ValueError(f"ASGI app {self.name} sent a body of {len(body)} bytes with Content-Length {length}")
        self.answered = True
        request.metrics_label = _route_label(self.scope, request.method)
        stream = self.stream = request.answer_now(response)
        if stream is not None:  # HEAD (above), or an answer the connection could not encode
            stream.add_done_callback(self.hang_up)
        elif self.listener is not None:  # written, or queued behind an earlier answer: sent, for the app
            self.hang_up()

    def _str_headers(self) -> list[tuple[str, str]]:
        """The app's headers for a ``StreamResponse`` (the framing ones are the server's)."""
        headers = []
        for name, value in self.headers:
            name = name.decode("latin-1") if isinstance(name, bytes) else name
            value = value.decode("latin-1") if isinstance(value, bytes) else value
            lower = name.lower()
            if lower == "content-length":
                self.length = _content_length(value)
            elif lower != "transfer-encoding" and lower != "server" and lower != "date":
                headers.append((name, value))
        return headers

    def _start_stream(self) -> None:
        """The body comes in pieces (or from a file): a ``StreamResponse`` the connection writes as it comes."""
        request = self.request
        headers = self._str_headers()  # checked (a ValueError) before anything is answered
        response = StreamResponse(self._chunks(), self.status, headers, content_length=self.length)
        self.answered = True
        request.metrics_label = _route_label(self.scope, request.method)
        self.queue = deque()
        if request.method == "HEAD":  # the connection will not read the stream: let the app finish
            self.discard = True
        stream = self.stream = request.answer_now(response)
        if stream is not None:
            stream.add_done_callback(self.hang_up)
        else:  # dropped: the client is gone
            self.hang_up()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                queue = self.queue
                if queue:
                    piece = queue.popleft()
                    writer = self.writer
                    if writer is not None and not writer.done():
                        writer.set_result(None)
                    yield piece
                elif self.error is not None:
                    raise self.error
                elif self.path is not None:
                    async for piece in _read_file(self.path):
                        yield piece
                    return
                elif self.ended:
                    return
                else:
                    self.reader = asyncio.get_running_loop().create_future()
                    await self.reader
        finally:
            if not self.ended or self.error is not None:
                self.gone = True
                writer = self.writer
                in_send = writer is not None and not writer.done()
                if in_send:
                    writer.set_result(None)  # the app's send() waiting for room raises ClientGone
                if self.listening:
                    self.hang_up()  # the app's receive() hears http.disconnect
                elif self.error is None and self.task is not None and not in_send:
                    # The app is producing (a StreamingResponse's generator between chunks, say): cancel it
                    # so its ``finally`` runs now, not whenever the garbage collector finds the generator.
                    self.task.cancel()

    def _wake_reader(self) -> None:
        reader = self.reader
        if reader is not None and not reader.done():
            reader.set_result(None)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _read_file(path: str) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with open(path, "rb") as f:
        while True:
            piece = await loop.run_in_executor(None, f.read, FILE_CHUNK)
            if not piece:
                return
            yield piece


def _last_line(message: str) -> str:
    """The line that names the error: Starlette sends a whole traceback as the failure message."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class _Lifespan:
    """The ``lifespan`` scope: one task for the app's whole life, spoken to through two queues."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.listener: asyncio.Future[None] | None = None  # receive() waiting for the client to go
        self.unsupported = False

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as exc:
            await self.outbox.put({"type": "raised", "error": exc})
            if not isinstance(exc, Exception):
                raise
        else:
            await self.outbox.put({"type": "returned"})

    async def _send(self, message: Message) -> None:
        await self.outbox.put(message)

    async def startup(self) -> str | None:
        """None when the app started; else why not (``unsupported`` says whether it just has no lifespan)."""
        self.task = asyncio.get_running_loop().create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self.outbox.get()
        kind = reply["type"]
        if kind == "lifespan.startup.complete":
            return None
        if kind == "lifespan.startup.failed":
            return _last_line(reply.get("message", "")) or "lifespan.startup.failed"
        self.unsupported = True  # raised or returned before completing startup
        error = reply.get("error")
        return f"{type(error).__name__}: {error}" if error is not None else "the app returned during startup"

    async def shutdown(self) -> str | None:
        if self.task is None or self.task.done():
            return None
        await self.inbox.put({"type": "lifespan.shutdown"})
        reply = await self.outbox.get()
        if reply["type"] == "lifespan.shutdown.failed":
            return reply.get("message", "") or "lifespan.shutdown.failed"
        if reply["type"] == "raised":
            return repr(reply.get("error"))
        return None
