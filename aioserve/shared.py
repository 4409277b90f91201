"""What every connection of one server shares, and what the real-time plug-in must offer.

``ServerState`` is built once per server (``server.py``) and handed to each ``Connection``. The
``Observer`` protocol is the whole surface between the connection and the optional real-time plug-in
(``realtime.py``): the connection calls it at a few fixed points, and the plug-in answers through the
connection's public methods only.
"""
from __future__ import annotations

import asyncio
import types
from typing import TYPE_CHECKING, Any, Callable, Generator, Protocol

from .accesslog import AccessLog
from .app import App
from .config import Config
from .proxy import ProxyHeaders
from .request import Request
from .timers import Timers
from .wire import HeaderClock

if TYPE_CHECKING:
    from .exchange import Exchange


class Observer(Protocol):
    """The real-time plug-in, as the connection calls it (one per server, or none).

    ``schedules``: True when admission control (deadlines, shedding) is in force. Only then do
    handlers start on a later turn of the loop, so every head of a read is admitted or refused, and
    its budget started, before any handler runs. Metrics and Server-Timing never change scheduling.
    """

    schedules: bool
    server_timing: bool
    tracks_starts: bool  # admission control is on: call ``started`` as every handler starts

    def started(self, exchange: Exchange) -> None:
        """A handler starts (after ``before_start``): admission control measures queueing delay here."""

    def admit(self, conn: Responder, exchange: Exchange) -> bool:
        """A head is parsed and routed: True to run it, False when the observer answered it (shed)."""

    def before_start(self, conn: Responder, exchange: Exchange) -> bool:
        """A handler's task is about to run it: False when its budget already ran out (answered)."""

    def finished(self, exchange: Exchange, status: int) -> None:
        """The exchange is answered, or dropped (499): no longer in flight; record its latency."""

    def timing(self, exchange: Exchange) -> bytes:
        """The ``Server-Timing`` header line for this answer."""


class Responder(Protocol):
    """The connection's public surface, as plug-ins (deadlines, shedding) use it to answer."""

    loop: asyncio.AbstractEventLoop
    app: App

    def can_answer(self, exchange: Exchange) -> bool: ...

    def answer(self, exchange: Exchange, result: object) -> None: ...

    def answer_head(self, exchange: Exchange, head: bytes, body: bytes, status: int, close: bool) -> None: ...

    def drop(self, exchange: Exchange) -> None: ...


class WebSocketStats:
    """Open WebSockets and messages each way (``wsconn.py``); kept only when metrics are on."""

    __slots__ = ("open", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.open = 0
        self.messages_in = 0
        self.messages_out = 0


@types.coroutine
def _drive() -> Generator[Any, Any, None]:
    coro = yield
    while True:
        coro = yield (yield from coro)


def one_step_driver() -> Generator[Any, Any, None]:
    """A started driver: ``driver.send(coro)`` returns what ``coro``, a coroutine that cannot suspend
    (an ``async def`` without ``await``), returns.

    ``yield from`` receives a finished coroutine's value from the interpreter as a plain value, where
    ``coro.send(None)`` would raise it inside a ``StopIteration`` (an exception object, a traceback
    entry and a handler per request). A server's connections share one driver: such a coroutine
    finishes inside one ``send``, so two never interleave. A handler's exception ends the driver, and
    the connection starts a new one.
    """
    driver = _drive()
    driver.send(None)
    return driver


class ServerState:
    """What every connection of one server shares."""

    __slots__ = ("app", "config", "loop", "clock", "connections", "all_closed", "last_host", "proxy",
                 "requests_left", "on_request", "observer", "wbuf", "timers", "access", "form_limits",
                 "websockets", "driver")

    def __init__(self, app: App, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.config = config
        self.loop = loop
        self.clock = HeaderClock(config.server_header, config.timeout_keep_alive)
        self.connections: set = set()
        self.timers = Timers(loop, self.connections)  # every connection's stage timeout, one loop timer
        self.all_closed: asyncio.Event | None = None  # set while draining
        self.last_host = b""  # the last Host value that passed validation
        # Answers collected while one connection parses a read, written as one; shared because only
        # one connection is ever inside feed_data, and it leaves the list empty (connection.py).
        self.wbuf: list[bytes] = []
        self.driver = one_step_driver()  # runs inline coroutines (connection.py); replaced when one raises
        self.observer: Observer | None = None  # the real-time plug-in (realtime.py), when the app uses it
        self.proxy = ProxyHeaders(config.forwarded_allow_ips) if config.proxy_headers else None
        self.requests_left = 0
        self.form_limits = config.form_limits()  # what request.form() allows by default
        self.access = AccessLog(loop) if config.access_log else None  # accesslog.py
        self.websockets: WebSocketStats | None = None  # set by the real-time plug-in when metrics are on
        # Called by the connection for every new request, and only set when a feature needs it, so
        # a server without proxy headers or a request limit pays one ``is None`` test per request.
        self.on_request: Callable[[Request], None] | None = self.proxy.apply if self.proxy else None

    def limit_requests(self, limit: int, on_limit: Callable[[], None]) -> None:
        """Call ``on_limit`` once, when the ``limit``-th request arrives (a worker's --limit-max-requests)."""
        proxy = self.proxy
        self.requests_left = limit

        def on_request(req: Request) -> None:
            if proxy is not None:
                proxy.apply(req)
            self.requests_left -= 1
            if self.requests_left == 0:
                on_limit()

        self.on_request = on_request

    def forget(self, conn: object) -> None:
        """A connection has closed (``connection_lost``): no longer open, and its timer entry is stale."""
        self.connections.discard(conn)
        self.timers.closed(conn)  # type: ignore[arg-type]
        if not self.connections and self.all_closed is not None:
            self.all_closed.set()
