"""Server lifecycle: listen, serve, and shut down in order.

``serve()`` starts listening inside a running loop and returns a ``Server``; ``run()`` owns a loop of
its own (uvloop when available), installs SIGINT/SIGTERM handlers and blocks until one arrives.
Shutdown order: stop accepting, close idle connections, let in-flight requests finish (answered with
``Connection: close``) until the graceful timeout, cancel what is left, run the shutdown hooks.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
from typing import Any, Callable

from .accept import BatchAcceptor, listening_socket, warn_out_of_resources
from .accesslog import AccessLog
from .app import App
from .config import Config
from .logconfig import LOG_FORMAT, ConfigError
from .logconfig import configure_logging as _configure_logging
from .protocol import HttpProtocol
from .proxy import ProxyHeaders
from .request import Request
from .realtime import Realtime
from .router import Router
from .sockets import BindError, bind_unix, describe, remove_unix, socket_url
from .tls import make_ssl_context
from .timers import Timers
from .wire import HeaderClock

logger = logging.getLogger("aioserve")

__all__ = ["LOG_FORMAT", "Server", "ServerState", "run", "serve"]


class ServerState:
    """What every connection of one server shares."""

    __slots__ = ("app", "config", "loop", "clock", "connections", "all_closed", "last_host", "proxy",
                 "requests_left", "on_request", "rt", "wbuf", "timers", "access")

    def __init__(self, app: App, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.config = config
        self.loop = loop
        self.clock = HeaderClock(config.server_header, config.timeout_keep_alive)
        self.connections: set[HttpProtocol] = set()
        self.timers = Timers(loop, self.connections)  # every connection's deadline, one loop timer
        self.all_closed: asyncio.Event | None = None  # set while draining
        self.last_host = b""  # the last Host value that passed validation
        # Answers collected while one connection parses a read, written as one; shared because only
        # one connection is ever inside feed_data, and it leaves the list empty (responder.py).
        self.wbuf: list[bytes] = []
        self.rt: Realtime | None = None  # deadlines, shedding, metrics (realtime.py), when the app uses them
        self.proxy = ProxyHeaders(config.forwarded_allow_ips) if config.proxy_headers else None
        self.requests_left = 0
        self.access = AccessLog(loop) if config.access_log else None  # accesslog.py
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

    def forget(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)
        if not self.connections and self.all_closed is not None:
            self.all_closed.set()


class Server:
    """A listening server: ``port``, ``sockets``, ``await shutdown(timeout)``."""

    def __init__(self, app: App | Router, config: Config, sock: socket.socket | None = None) -> None:
        if not isinstance(app, App):
            if isinstance(app, Router):
                app = App.from_router(app)
            else:
                raise TypeError(f"cannot serve {type(app).__name__}: expected an aioserve App or Router")
        self.app = app
        self.config = config
        self.state: ServerState | None = None
        self._server: asyncio.AbstractServer | None = None
        self._closed = asyncio.Event()
        self._sock = sock  # already listening (a worker's inherited socket); else bound in start()
        self._unix_path: str | None = None  # bound here: the file is removed at shutdown

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        ssl_ctx = make_ssl_context(config)
        state = self.state = ServerState(self.app, config, loop)
        await self.app.startup()
        state.clock.start(loop)
        if Realtime.wanted(self.app, config):
            state.rt = Realtime(self.app, config, state)
            state.rt.start()

        def factory() -> HttpProtocol:
            return HttpProtocol(state)

        try:
            sock = self._sock
            if sock is None and config.uds:
                sock = bind_unix(config.uds, config.backlog)
                self._unix_path = config.uds
            elif sock is None and config.fd is not None:
                sock = socket.socket(fileno=config.fd)
            elif sock is None and config.accept_batch and ssl_ctx is None and _is_ip(config.host):
                sock = listening_socket(config.host, config.port, config.backlog)
            if sock is not None and sock.family == socket.AF_UNIX:
                self._server = await loop.create_unix_server(factory, sock=sock, backlog=config.backlog, ssl=ssl_ctx)
            elif sock is not None and config.accept_batch and ssl_ctx is None and _can_watch(loop):
                sock.listen(config.backlog)
                acceptor = BatchAcceptor(loop, sock, factory, config.accept_batch)
                acceptor.start()
                self._server = acceptor  # type: ignore[assignment]
            elif sock is not None:
                self._server = await loop.create_server(factory, sock=sock, backlog=config.backlog, ssl=ssl_ctx)
            else:
                self._server = await loop.create_server(
                    factory, config.host, config.port, backlog=config.backlog, reuse_address=True, ssl=ssl_ctx)
        except BaseException:
            state.clock.stop()
            state.timers.close()
            if state.rt is not None:
                state.rt.stop()
            await self.app.shutdown()
            raise

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._server.sockets) if self._server else []

    @property
    def port(self) -> int | None:
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return sock.getsockname()[1]
        return None

    @property
    def url(self) -> str:
        scheme = "https" if self.config.ssl_certfile else "http"
        if self.config.uds and self._sock is None:
            return f"unix:{self.config.uds}"
        if self._sock is not None or self.config.fd is not None:
            return socket_url(self.sockets[0], scheme)
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self.state.connections) if self.state else 0

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, finish in-flight requests (up to ``timeout`` seconds), close, run hooks."""
        if self._closed.is_set() or self.state is None:
            return
        state = self.state
        if self._server is not None:
            self._server.close()
        state.all_closed = asyncio.Event()
        for conn in list(state.connections):
            conn.start_draining()
        if state.connections:
            state.all_closed.clear()
            try:
                await asyncio.wait_for(state.all_closed.wait(), timeout)
            except asyncio.TimeoutError:
                logger.warning("Graceful shutdown timed out with %d connection(s) busy; cancelling",
                               len(state.connections))
        for conn in list(state.connections):
            tasks = [req._task for req in conn.pipeline if req._task is not None and not req._task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        if self._unix_path is not None:
            remove_unix(self._unix_path)
        state.clock.stop()
        state.timers.close()
        if state.access is not None:
            state.access.flush()  # the lines of the last answers, not left for a loop turn that may not come
        if state.rt is not None:
            state.rt.stop()
        await self.app.shutdown()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


def _can_watch(loop: asyncio.AbstractEventLoop) -> bool:
    """Batch accept needs ``add_reader``; Windows' proactor loop has none (it keeps its own accept)."""
    return not isinstance(loop, getattr(asyncio, "ProactorEventLoop", ()))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def serve(app: App | Router, **settings: Any) -> Server:
    """Start serving ``app`` inside the running loop; returns once it is listening."""
    config = Config.from_settings(**settings)
    if config.workers > 1 or config.reload or config.limit_max_requests:
        logger.warning("serve() runs in the calling process and loop: workers, reload and limit_max_requests "
                       "apply to run() and the CLI only")
    server = Server(app, config)
    await server.start()
    logger.info("Listening on %s", server.url)
    return server


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise SystemExit("aioserve: error: --loop uvloop needs uvloop installed (pip install uvloop), or use --loop asyncio") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def configure_logging(level: str | None, log_config: str | None = None) -> None:
    """Give aioserve's loggers a stderr handler unless the application configured logging already."""
    try:
        _configure_logging(level, log_config)
    except ConfigError as exc:
        raise SystemExit(f"aioserve: error: {exc}") from None


def run(app: App | Router, **settings: Any) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully. Blocks.

    ``reload=True`` watches the code and restarts a child process (``reload.py``); ``workers > 1`` or
    ``limit_max_requests`` runs a supervisor with worker processes (``supervisor.py``).
    """
    config = Config.from_settings(**settings)
    configure_logging(config.log_level, config.log_config)
    from . import reload, supervisor

    if config.reload and not reload.is_reload_child():
        reload.run_reloader(config)
        return
    reload.adopt_reload_socket(config)
    try:
        make_ssl_context(config)  # check the files once, before anything starts
    except ValueError as exc:
        raise SystemExit(f"aioserve: error: {exc}") from None
    if config.workers > 1 or config.limit_max_requests:
        supervisor.run_supervisor(app, config)
        return
    with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
        runner.run(_serve_until_signalled(app, config))


def _capacity_errors_as_warnings(loop: asyncio.AbstractEventLoop) -> None:
    """accept() failing for lack of descriptors or memory is a capacity problem, not a crash.

    The loop already backs off and keeps serving (asyncio pauses accepting for a second; libuv drops
    the queued connection); this turns its per-retry ERROR traceback into one warning every 10 s.
    """
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            warn_out_of_resources(context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def _serve_until_signalled(app: App | Router, config: Config) -> None:
    loop = asyncio.get_running_loop()
    _capacity_errors_as_warnings(loop)
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.info("Received %s, shutting down gracefully", signal.Signals(signum).name)
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    server = Server(app, config)
    try:
        await server.start()
    except BindError as exc:
        raise SystemExit(f"aioserve: error: {exc.strerror or exc}") from None
    except OSError as exc:
        raise SystemExit(f"aioserve: error: cannot listen on {describe(config)}: {exc.strerror or exc}") from None
    logger.info("Listening on %s (loop: %s, workers: 1, pid: %d)", server.url, loop_name(loop), os.getpid())
    await stop.wait()
    await server.shutdown(config.timeout_graceful_shutdown)
    logger.info("Stopped")
