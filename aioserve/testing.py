"""Test an app without a socket: ``TestClient`` (an ``httpx2.Client``) and ``AsyncTestClient``.

Each request gets a real ``Connection`` (connection.py) on an in-memory transport, so the parser,
limits, framing, middleware, finishers and deadlines all apply exactly as on the network. The client
side frames and parses HTTP with h11 and WebSocket with ``websockets``' sans-IO ``ClientProtocol``;
nothing here frames a message by hand.

``TestClient`` is synchronous: it runs the app on an event loop in a thread of its own (a portal)
and blocks on it, so a test needs no event loop. ``raise_server_exceptions`` works through the app's
own error log: while a client is open, ``aioserve.error`` (the one logger the server reports errors
to) collects every exception it is asked to log at ERROR or above in a test request's context (a
``ContextVar``), before and whatever its level, ``logging.disable`` or ``disabled`` decide; the client
raises the first one. What gets written to the log is unchanged. That context is a copy made for the
test's connection (the server's side of it runs in it); the test's own context is never changed, so a
real server the test starts does not report to a test client.
"""
from __future__ import annotations

import asyncio
import contextvars
import json as jsonlib
import logging
import ssl
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, TypeVar

import h11
import httpx2
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response as WSResponse
from websockets.uri import parse_uri

from .app import App
from .config import Config
from .connection import Connection
from .errors import error_logger
from .realtime import Realtime
from .router import Router
from .server import servable
from .shared import ServerState

__all__ = ["AsyncTestClient", "TestClient", "WebSocketTestSession", "AsyncWebSocketTestSession"]

T = TypeVar("T")
CLIENT_ADDRESS = ("testclient", 50000)
SERVER_ADDRESS = ("testserver", 80)
TLS_SERVER_ADDRESS = ("testserver", 443)
HIGH_WATER = 64 * 1024  # unread response bytes before the server is told to pause writing
CLOSE_TIMEOUT = 10.0  # seconds a WebSocket close() waits for the server's answer, as websockets' default
# What the WebSocket handshake itself says: a client's default headers never replace these.
HANDSHAKE_HEADERS = frozenset({"host", "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
                               "sec-websocket-protocol", "sec-websocket-extensions", "content-length",
                               "transfer-encoding"})
_tls_context: ssl.SSLContext | None = None  # what an https connection reports as its "sslcontext"
_errors: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar("aioserve_test_errors", default=None)


class _ErrorCollector:
    """Collects the exceptions ``aioserve.error`` is asked to log in a test request (module docstring).

    A logging handler would not do: the logger drops a record before any handler sees it when its
    level, ``logging.disable`` or ``logger.disabled`` say so. So, while a client is open, the logger's
    own ``isEnabledFor`` and ``handle`` are shadowed (instance attributes): in a test request's context
    every record at ERROR or above (the level the server reports failures at) is made and collected, and
    then handled only if the logger would have handled it. Below ERROR nothing changes.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.users = 0

    def install(self) -> None:
        if self.users == 0:
            self.logger.isEnabledFor = self.is_enabled_for  # type: ignore[method-assign]
            self.logger.handle = self.handle  # type: ignore[method-assign]
        self.users += 1

    def remove(self) -> None:
        self.users -= 1
        if self.users == 0:
            for name in ("isEnabledFor", "handle"):
                self.logger.__dict__.pop(name, None)

    def is_enabled_for(self, level: int) -> bool:
        return level >= logging.ERROR and _errors.get() is not None \
            or type(self.logger).isEnabledFor(self.logger, level)

    def handle(self, record: logging.LogRecord) -> None:
        bag = _errors.get()
        if bag is not None and record.levelno >= logging.ERROR and record.exc_info and record.exc_info[1] is not None:
            bag.append(record.exc_info[1])
        logger = self.logger
        if type(logger).isEnabledFor(logger, record.levelno):
            type(logger).handle(logger, record)


def _tls() -> ssl.SSLContext:
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    return _tls_context


class MemoryTransport(asyncio.Transport):
    """The server's side of an in-memory connection: what it writes is read by the test client.

    With ``tls`` (an https or wss URL) it reports an ``sslcontext``, as a TLS transport does, so the
    connection serves the request as https; the bytes are never encrypted. With ``errors`` (the test
    request's error list), what the client makes the server do runs in a copy of the client's context
    where ``_errors`` is that list (``context()``): handlers started from there inherit it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tls: bool = False,
                 errors: list[BaseException] | None = None) -> None:
        super().__init__()
        self.loop = loop
        self.errors = errors
        self.extra: dict[str, Any] = {"peername": CLIENT_ADDRESS, "sockname": SERVER_ADDRESS}
        if tls:
            self.extra.update(sockname=TLS_SERVER_ADDRESS, sslcontext=_tls())
        self.protocol: asyncio.Protocol | None = None
        self.inbound = bytearray()  # written by the server, not yet read by the client
        self.closed = False  # the server closed (or the client went away)
        self.lost = False
        self.reading = True
        self.resumed: asyncio.Future[None] | None = None
        self.wakeup: asyncio.Future[None] | None = None
        self.server_paused = False

    # -- asyncio.Transport, as the server uses it -------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.inbound += data
        self._wake()
        if not self.server_paused and len(self.inbound) > HIGH_WATER and self.protocol is not None:
            self.server_paused = True
            self.protocol.pause_writing()

    def writelines(self, data: Any) -> None:
        for piece in data:
            self.write(piece)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._wake()
            self._release_sender()
            self.loop.call_soon(self._lose)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self._release_sender()

    def is_reading(self) -> bool:
        return self.reading

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:  # a WebSocket session takes over
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[return-value]

    def get_write_buffer_size(self) -> int:
        return len(self.inbound)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    # -- the client's side --------------------------------------------------------------------------
    def context(self) -> contextvars.Context:
        """A copy of the current context with this connection's error list as ``_errors`` (a fresh copy
        each time: the caller's own context is never changed, and no copy is entered twice)."""
        context = contextvars.copy_context()
        if self.errors is not None:
            context.run(_errors.set, self.errors)
        return context

    async def send(self, data: bytes) -> None:
        """Deliver request bytes, as the network would: only while the server reads, and from a loop
        callback, not from the client's task, so a handler the connection runs inline sees no current
        task, as on a socket. Returns once they are delivered (the next send waits for that)."""
        if not data:
            return
        while not self.reading and not self.closed:
            self.resumed = self.loop.create_future()
            await self.resumed
        if not self.closed and self.protocol is not None:
            delivered: asyncio.Future[None] = self.loop.create_future()
            self.loop.call_soon(self._deliver, data, delivered, context=self.context())  # handlers inherit it
            await delivered

    def _deliver(self, data: bytes, delivered: asyncio.Future[None]) -> None:
        try:
            if not self.closed and self.protocol is not None:
                self.protocol.data_received(data)
        except BaseException as exc:  # the connection's own failure: the test sees it
            if not delivered.done():
                delivered.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not delivered.done():
                delivered.set_result(None)

    async def receive(self) -> bytes:
        """What the server wrote since the last call; b"" once it closed and all is read."""
        while not self.inbound and not self.closed:
            self.wakeup = self.loop.create_future()
            await self.wakeup
        data = bytes(self.inbound)
        self.inbound.clear()
        if self.server_paused and self.protocol is not None and not self.closed:
            self.server_paused = False
            self.protocol.resume_writing()
        return data

    def disconnect(self) -> None:
        """The client goes away."""
        self.closed = True
        self._wake()
        self._release_sender()
        self.context().run(self._lose)

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            if self.protocol is not None:
                self.protocol.connection_lost(None)

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    def _release_sender(self) -> None:
        """A ``send`` waiting for the server to read again goes on: it reads, or the connection is over
        (without this, a close while the server was not reading would leave the sender waiting forever)."""
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)


class _Server:
    """What a server would hold for the app: its state, the real-time plug-in, the hooks."""

    def __init__(self, app: App | Router, settings: dict[str, Any]) -> None:
        settings.setdefault("access_log", False)
        self.config = Config.from_settings(**settings)
        app = servable(app, self.config)  # factory= and interface= mean what they mean to serve()
        if not isinstance(app, App):
            if isinstance(app, Router):
                app = App.from_router(app)
            else:
                raise TypeError(f"cannot test {type(app).__name__}: expected an aioserve App or Router")
        self.app = app
        self.state: ServerState | None = None
        self.realtime: Realtime | None = None
        self.started = False
        self.connections: set[Connection] = set()  # every one made, kept while open or still handling

    def ensure(self) -> ServerState:
        if self.state is None:
            loop = asyncio.get_running_loop()
            state = self.state = ServerState(self.app, self.config, loop)
            self.app.compile()
            state.clock.start(loop)
            if Realtime.wanted(self.app, self.config):
                self.realtime = Realtime(self.app, self.config, state)
                state.observer = self.realtime
                self.realtime.start()
        return self.state

    async def startup(self) -> None:
        self.ensure()
        await self.app.startup()
        self.started = True

    async def shutdown(self) -> None:
        """As a server's shutdown, in its order: what still runs for a request is cancelled (the test has
        let go of it: a handler still waiting after a timeout), connections close, then the hooks."""
        state = self.state
        if state is not None:
            self.state = None
            tasks = [task for conn in self.connections for task in conn.outstanding_tasks()]
            self.connections.clear()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for conn in list(state.connections):
                conn.abort()
            state.clock.stop()
            state.timers.close()
            if self.realtime is not None:
                self.realtime.stop()
        if self.started:
            self.started = False
            await self.app.shutdown()

    def connect(self, tls: bool = False, errors: list[BaseException] | None = None) -> tuple[MemoryTransport, Connection]:
        """A connection whose server side reports its errors to ``errors`` (see ``MemoryTransport``)."""
        state = self.ensure()  # outside the connection's context: the server's clock is not the test's
        transport = MemoryTransport(state.loop, tls, errors)
        conn = Connection(state)
        self.connections = {c for c in self.connections if c in state.connections or c.outstanding_tasks()}
        self.connections.add(conn)
        transport.protocol = conn
        transport.context().run(conn.connection_made, transport)
        return transport, conn


class _ResponseBody(httpx2.AsyncByteStream):
    """The response body as the server writes it, read through h11 as the test consumes it."""

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ex = self.exchange
        while True:
            event = await ex.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                ex.check_failures()
                return
            else:  # the server closed mid-message
                ex.check_failures()
                raise httpx2.RemoteProtocolError("the server closed the connection before the end of the response")

    async def aclose(self) -> None:
        await self.exchange.close()


class _Exchange:
    """One request over its own in-memory connection, honouring the request's read and write timeouts.

    The request body goes out from a task of its own while the response is read, as over a socket: a
    handler may answer (at any length) before or while it reads the upload, or never read it. Sending it
    all before reading would deadlock as soon as the server, its answer unread, stops reading.
    """

    def __init__(self, server: _Server, raise_errors: bool, request: httpx2.Request) -> None:
        self.request = request
        self.errors: list[BaseException] = []
        self.transport, self.conn = server.connect(request.url.scheme == "https", self.errors)
        self.h11 = h11.Connection(h11.CLIENT)
        self.raise_errors = raise_errors
        timeout = request.extensions.get("timeout") or {}
        self.read_timeout: float | None = timeout.get("read")
        self.write_timeout: float | None = timeout.get("write")
        self.upload: asyncio.Task[None] | None = None

    async def next_event(self) -> Any:
        """The response's next h11 event; None if the server closed before its end. What h11 refuses is
        an ``httpx2.RemoteProtocolError``, as from any httpx transport, unless a failure explains it."""
        try:
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await self._receive()
                    self.h11.receive_data(data)  # b"" is the end of the stream
                    if not data and self.h11.their_state is not h11.DONE:
                        event = self.h11.next_event()
                        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                            return None
                        return event
                    continue
                if isinstance(event, h11.InformationalResponse):
                    continue  # 100 Continue
                return event
        except h11.RemoteProtocolError as exc:
            self.check_failures()
            raise httpx2.RemoteProtocolError(str(exc), request=self.request) from exc

    async def _receive(self) -> bytes:
        try:
            async with asyncio.timeout(self.read_timeout):
                return await self.transport.receive()
        except TimeoutError:
            self.transport.disconnect()
            raise httpx2.ReadTimeout(f"the server sent nothing for {self.read_timeout} s",
                                     request=self.request) from None

    async def _send(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.transport.send(data)
        except TimeoutError:
            self.transport.disconnect()
            raise httpx2.WriteTimeout(f"the server read nothing for {self.write_timeout} s",
                                      request=self.request) from None

    async def _upload(self, body: AsyncIterator[bytes]) -> None:
        """Send the request body; if that fails, the connection goes too (the reader then sees why).
        However it ends, ``body`` is closed: a test's generator runs its ``finally`` now, not at GC."""
        try:
            async for piece in body:
                if self.transport.closed:
                    return  # the server closed: it wants no more (its answer says why)
                if piece:
                    await self._send(self.h11.send(h11.Data(data=piece)))
            if self.h11.our_state is h11.SEND_BODY and not self.transport.closed:
                await self._send(self.h11.send(h11.EndOfMessage()))
        except BaseException:
            self.transport.disconnect()
            raise
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()

    def check_failures(self) -> None:
        """Raise what went wrong: the upload's own failure, else the handler's exception (if raised)."""
        upload = self.upload
        if upload is not None and upload.done() and not upload.cancelled() and upload.exception() is not None:
            self.transport.disconnect()
            raise upload.exception()  # type: ignore[misc]
        if self.raise_errors and self.errors:
            self.transport.disconnect()
            raise self.errors[0]

    async def close(self) -> None:
        """The test is done with the response: the connection goes, and an upload still going stops."""
        self.transport.disconnect()
        upload = self.upload
        if upload is not None:
            upload.cancel()
            await asyncio.wait([upload])

    async def run(self, body: AsyncIterator[bytes]) -> httpx2.Response:
        request = self.request
        headers = [(k, v) for k, v in request.headers.raw]
        if not any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in headers) and \
                request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            headers.append((b"content-length", b"0"))
        event = h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
        try:
            await self._send(self.h11.send(event))
            self.upload = asyncio.get_running_loop().create_task(self._upload(body))
            self.upload.add_done_callback(_retrieve)
            response = await self.next_event()
            self.check_failures()
            if not isinstance(response, h11.Response):
                raise httpx2.RemoteProtocolError("the server closed the connection without a response")
        except BaseException:  # a failure, a timeout or the test's cancellation: nothing is left running
            await self.close()
            raise
        return httpx2.Response(
            response.status_code, headers=list(response.headers), stream=_ResponseBody(self),
            extensions={"http_version": b"HTTP/" + response.http_version, "reason_phrase": response.reason},
        )


def _retrieve(task: asyncio.Task[None]) -> None:
    """An upload's failure is raised to the test by the reader (``check_failures``), or by nothing
    once the response is over: either way asyncio must not report it as never retrieved."""
    if not task.cancelled():
        task.exception()


class _AsyncTransport(httpx2.AsyncBaseTransport):
    def __init__(self, server: _Server, raise_errors: bool) -> None:
        self.server = server
        self.raise_errors = raise_errors

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await _Exchange(self.server, self.raise_errors, request).run(request.stream.__aiter__())  # type: ignore[union-attr]


class _Portal:
    """An event loop in a thread of its own, for the synchronous client."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def call(self, coro: Awaitable[T]) -> T:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="aioserve-testclient", daemon=True)
            self.thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def close(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)  # type: ignore[union-attr]
            self.loop.close()
            self.loop = None


class _SyncBody(httpx2.SyncByteStream):
    def __init__(self, portal: _Portal, stream: _ResponseBody) -> None:
        self.portal = portal
        self.iterator = stream.__aiter__()
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.portal.call(self.iterator.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.portal.call(self.stream.aclose())


class _SyncTransport(httpx2.BaseTransport):
    def __init__(self, server: _Server, raise_errors: bool, portal: _Portal) -> None:
        self.server = server
        self.raise_errors = raise_errors
        self.portal = portal

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()

        async def run() -> httpx2.Response:
            async def once() -> AsyncIterator[bytes]:
                yield body

            return await _Exchange(self.server, self.raise_errors, request).run(once())

        response = self.portal.call(run())
        return httpx2.Response(response.status_code, headers=response.headers.raw,
                               stream=_SyncBody(self.portal, response.stream), extensions=response.extensions)


_collector = _ErrorCollector(error_logger)  # installed while any client is open


def _handshake(client: httpx2.Client | httpx2.AsyncClient, path: str, headers: Any) -> tuple[str, list[tuple[str, str]]]:
    """The ``ws(s)://`` URI for ``path`` and the headers a browser would add to the handshake: the
    client's default headers (not those the handshake itself sets) and the cookies of its jar that
    match the URL, then the call's own ``headers``, which replace any of the same name.

    A relative ``path`` goes under ``base_url``'s path, as for a request; an absolute ``ws(s)://`` URL
    is taken as it is."""
    if client.is_closed:
        raise RuntimeError("Cannot open a WebSocket, as the client has been closed.")
    target = httpx2.URL(path)
    if target.scheme in ("ws", "wss"):  # the cookie jar matches http(s) URLs
        target = target.copy_with(scheme="https" if target.scheme == "wss" else "http")
    # build_request puts a relative path under base_url's, merges the default headers and the cookie jar.
    request = client.build_request("GET", target, headers=headers)
    url = request.url
    secure = url.scheme == "https"
    explicit = {name.lower() for name in httpx2.Headers(headers).keys()} if headers else set()
    pairs = [(name, value) for name, value in request.headers.multi_items()
             if name.lower() not in HANDSHAKE_HEADERS or name.lower() in explicit]
    return str(url.copy_with(scheme="wss" if secure else "ws")), pairs


class AsyncTestClient(httpx2.AsyncClient):
    """``async with AsyncTestClient(app) as client``: startup hooks on enter, shutdown hooks on exit.

    ``settings`` are server settings (``max_body_size=...``, ``timeout_body=...``), as ``serve()`` takes.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app: App | Router, *, base_url: str = "http://testserver",
                 raise_server_exceptions: bool = True, cookies: Any = None, headers: Any = None,
                 follow_redirects: bool = True, **settings: Any) -> None:
        self._server = _Server(app, settings)
        super().__init__(transport=_AsyncTransport(self._server, raise_server_exceptions), base_url=base_url,
                         cookies=cookies, headers=headers, follow_redirects=follow_redirects)
        _collector.install()  # only once nothing can fail: no client, nothing to undo it
        self._hooked = True
        self.raise_server_exceptions = raise_server_exceptions

    @property
    def app(self) -> App:
        return self._server.app

    async def __aenter__(self) -> AsyncTestClient:
        await super().__aenter__()
        try:
            await self._server.startup()
        except BaseException:
            try:
                await self._server.shutdown()
            finally:
                self._unhook()  # as TestClient's _finish: the logger is left as it was found
                await super().__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._server.shutdown()
        finally:
            self._unhook()
            await super().__aexit__(*exc_info)

    async def aclose(self) -> None:
        await self._server.shutdown()
        self._unhook()
        await super().aclose()

    def _unhook(self) -> None:
        if self._hooked:
            self._hooked = False
            _collector.remove()

    def websocket_connect(self, path: str, subprotocols: list[str] | None = None,
                          headers: Any = None) -> AsyncWebSocketTestSession:
        """``async with client.websocket_connect("/ws") as ws``: a WebSocket over the real session code.

        The handshake carries the client's cookies and default headers, as a browser's does; ``headers``
        adds to them (and replaces those of the same name).
        """
        uri, handshake_headers = _handshake(self, path, headers)
        return AsyncWebSocketTestSession(self._server, uri, subprotocols, handshake_headers,
                                         self.raise_server_exceptions)


class TestClient(httpx2.Client):
    """``with TestClient(app) as client``: a synchronous client; the app runs on a loop in a thread."""

    __test__ = False

    def __init__(self, app: App | Router, *, base_url: str = "http://testserver",
                 raise_server_exceptions: bool = True, cookies: Any = None, headers: Any = None,
                 follow_redirects: bool = True, **settings: Any) -> None:
        self._server = _Server(app, settings)
        self._portal = _Portal()
        super().__init__(transport=_SyncTransport(self._server, raise_server_exceptions, self._portal),
                         base_url=base_url, cookies=cookies, headers=headers, follow_redirects=follow_redirects)
        _collector.install()  # only once nothing can fail: no client, nothing to undo it
        self._hooked = True
        self.raise_server_exceptions = raise_server_exceptions

    @property
    def app(self) -> App:
        return self._server.app

    def __enter__(self) -> TestClient:
        super().__enter__()
        try:
            self._portal.call(self._server.startup())
        except BaseException:
            self._finish()
            super().__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._finish()
        finally:
            super().__exit__(*exc_info)

    def close(self) -> None:
        self._finish()
        super().close()

    def _finish(self) -> None:
        if self._portal.loop is not None:
            try:
                self._portal.call(self._server.shutdown())
            finally:
                self._portal.close()
        if self._hooked:
            self._hooked = False
            _collector.remove()

    def websocket_connect(self, path: str, subprotocols: list[str] | None = None,
                          headers: Any = None) -> WebSocketTestSession:
        """``with client.websocket_connect("/ws") as ws``: a WebSocket over the real session code.

        The handshake carries the client's cookies and default headers, as a browser's does; ``headers``
        adds to them (and replaces those of the same name).
        """
        uri, handshake_headers = _handshake(self, path, headers)
        session = AsyncWebSocketTestSession(self._server, uri, subprotocols, handshake_headers,
                                            self.raise_server_exceptions)
        return WebSocketTestSession(self._portal, session)


class WebSocketRejected(Exception):
    """The server refused the WebSocket handshake: ``status`` and ``body`` of its HTTP answer."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"WebSocket handshake refused with {status}")
        self.status = status
        self.body = body


class WebSocketClosed(Exception):
    """The server closed the WebSocket: ``code`` and ``reason``."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"WebSocket closed with {code} {reason}".strip())
        self.code = code
        self.reason = reason


class AsyncWebSocketTestSession:
    """The client side of a WebSocket, spoken with ``websockets``' sans-IO ``ClientProtocol``."""

    def __init__(self, server: _Server, uri: str, subprotocols: list[str] | None,
                 headers: Mapping[str, str] | list[tuple[str, str]] | None, raise_errors: bool) -> None:
        self.server = server
        self.uri = uri
        self.subprotocols = subprotocols
        # Added to the handshake, each name replacing what the handshake already has under it.
        self.extra_headers = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        self.raise_errors = raise_errors
        self.errors: list[BaseException] = []
        self.transport: MemoryTransport | None = None
        self.protocol: ClientProtocol | None = None
        self.messages: list[Any] = []
        self.accepted_subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.eof = False  # the server closed TCP and everything it wrote before has been read
        self.finished = False  # close() has run
        self.response: WSResponse | None = None  # the handshake's answer

    async def __aenter__(self) -> AsyncWebSocketTestSession:
        self.transport, _ = self.server.connect(self.uri.startswith("wss:"), self.errors)
        protocol = self.protocol = ClientProtocol(parse_uri(self.uri), subprotocols=self.subprotocols)  # type: ignore[arg-type]
        request = protocol.connect()
        for name in {name.lower() for name, _ in self.extra_headers}:
            if name in request.headers:
                del request.headers[name]
        for name, value in self.extra_headers:
            request.headers[name] = value
        protocol.send_request(request)
        await self._flush()
        while protocol.handshake_exc is None and protocol.state.name == "CONNECTING":
            data = await self.transport.receive()
            if not data:
                protocol.receive_eof()
                break
            protocol.receive_data(data)
        self._collect()
        if self.raise_errors and self.errors:
            raise self.errors[0]
        if protocol.handshake_exc is not None or self.response is None or self.response.status_code != 101:
            response = getattr(protocol.handshake_exc, "response", None) or self.response
            status = response.status_code if response is not None else 0
            body = response.body if response is not None else b""
            self.transport.disconnect()
            raise WebSocketRejected(status, body or b"")
        self.accepted_subprotocol = protocol.subprotocol
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
        if self.raise_errors and self.errors and exc_info[0] is None:
            raise self.errors[0]

    async def _flush(self) -> None:
        assert self.protocol is not None and self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                await self.transport.send(data)

    def _collect(self) -> None:
        assert self.protocol is not None
        for event in self.protocol.events_received():
            if isinstance(event, WSResponse):
                self.response = event
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.messages.append(event.data.decode("utf-8") if event.opcode is Opcode.TEXT else bytes(event.data))

    async def receive(self) -> str | bytes:
        """The next message; raises ``WebSocketClosed`` once the server closed.

        Every frame the server wrote before it closed is read first, in order, as from a socket:
        the close code is the server's close frame's (1006 if it closed TCP without one).
        """
        assert self.protocol is not None and self.transport is not None
        while not self.messages:
            if self.protocol.close_rcvd is not None or self.eof:
                await self._flush()  # the close answer
                self._closed()
                if self.raise_errors and self.errors:
                    raise self.errors[0]
                raise WebSocketClosed(self.close_code, self.close_reason)
            await self._read()
            await self._flush()  # pongs
        return self.messages.pop(0)

    async def _read(self) -> None:
        """Feed what the server wrote next (its TCP close once all is read) to the protocol."""
        assert self.protocol is not None and self.transport is not None
        data = await self.transport.receive()
        if data:
            self.protocol.receive_data(data)
        else:
            self.eof = True
            self.protocol.receive_eof()
        self._collect()

    def _closed(self) -> None:
        rcvd = self.protocol.close_rcvd if self.protocol is not None else None
        self.close_code, self.close_reason = (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")

    async def receive_text(self) -> str:
        message = await self.receive()
        if not isinstance(message, str):
            raise TypeError(f"expected a text message, got {len(message)} bytes")
        return message

    async def receive_bytes(self) -> bytes:
        message = await self.receive()
        if not isinstance(message, bytes):
            raise TypeError(f"expected a binary message, got text {message!r}")
        return message

    async def receive_json(self) -> Any:
        return jsonlib.loads(await self.receive_text())

    async def send_text(self, data: str) -> None:
        self.protocol.send_text(data.encode("utf-8"))  # type: ignore[union-attr]
        await self._flush()

    async def send_bytes(self, data: bytes) -> None:
        self.protocol.send_binary(data)  # type: ignore[union-attr]
        await self._flush()

    async def send_json(self, obj: Any) -> None:
        await self.send_text(jsonlib.dumps(obj))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (if still open), then read to the server's close frame or TCP close; ``close_code``
        and ``close_reason`` are then the server's close frame's (1006 without one, or if none came
        within ``CLOSE_TIMEOUT``: a server that stopped reading never takes the close)."""
        protocol, transport = self.protocol, self.transport
        if protocol is None or transport is None or self.finished:
            return
        self.finished = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if protocol.state.name == "OPEN" and not transport.closed:
                    protocol.send_close(code, reason)
                    await self._flush()
                # The server answers a close at once (or has closed): its close frame, then its TCP close.
                while protocol.close_rcvd is None and not self.eof:
                    await self._read()
        except TimeoutError:
            pass
        self._closed()
        transport.disconnect()


class WebSocketTestSession:
    """The synchronous face of ``AsyncWebSocketTestSession`` (``TestClient.websocket_connect``)."""

    def __init__(self, portal: _Portal, session: AsyncWebSocketTestSession) -> None:
        self.portal = portal
        self.session = session

    def __enter__(self) -> WebSocketTestSession:
        self.portal.call(self.session.__aenter__())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.portal.call(self.session.__aexit__(*exc_info))

    @property
    def accepted_subprotocol(self) -> str | None:
        return self.session.accepted_subprotocol

    @property
    def close_code(self) -> int | None:
        return self.session.close_code

    @property
    def close_reason(self) -> str:
        return self.session.close_reason

    def _call(self, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(method(*args))

    def receive(self) -> str | bytes:
        return self._call(self.session.receive)

    def receive_text(self) -> str:
        return self._call(self.session.receive_text)

    def receive_bytes(self) -> bytes:
        return self._call(self.session.receive_bytes)

    def receive_json(self) -> Any:
        return self._call(self.session.receive_json)

    def send_text(self, data: str) -> None:
        self._call(self.session.send_text, data)

    def send_bytes(self, data: bytes) -> None:
        self._call(self.session.send_bytes, data)

    def send_json(self, obj: Any) -> None:
        self._call(self.session.send_json, obj)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._call(self.session.close, code, reason)
