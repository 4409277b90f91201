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
import sys
from typing import Any, Callable

from .accept import BatchAcceptor, listening_socket
from .app import App
from .config import Config
from .protocol import HttpProtocol
from .realtime import Realtime
from .router import Router
from .wire import HeaderClock

logger = logging.getLogger("aioserve")

LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class ServerState:
    """What every connection of one server shares."""

    __slots__ = ("app", "config", "loop", "clock", "connections", "all_closed", "rt")

    def __init__(self, app: App, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.config = config
        self.loop = loop
        self.clock = HeaderClock(config.server_header, config.timeout_keep_alive)
        self.connections: set[HttpProtocol] = set()
        self.all_closed: asyncio.Event | None = None  # set while draining
        self.rt: Realtime | None = None  # deadlines, shedding, metrics (realtime.py), when the app uses them

    def forget(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)
        if not self.connections and self.all_closed is not None:
            self.all_closed.set()


class Server:
    """A listening server: ``port``, ``sockets``, ``await shutdown(timeout)``."""

    def __init__(self, app: App | Router, config: Config) -> None:
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

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        state = self.state = ServerState(self.app, config, loop)
        await self.app.startup()
        state.clock.start(loop)
        if Realtime.wanted(self.app, config):
            state.rt = Realtime(self.app, config, state)
            state.rt.start()

        def factory() -> HttpProtocol:
            return HttpProtocol(state)

        try:
            if config.uds:
                self._server = await loop.create_unix_server(factory, config.uds, backlog=config.backlog)
            elif config.accept_batch and (config.fd is not None or _is_ip(config.host)):
                if config.fd is not None:
                    sock = socket.socket(fileno=config.fd)
                    sock.listen(config.backlog)
                else:
                    sock = listening_socket(config.host, config.port, config.backlog)
                acceptor = BatchAcceptor(loop, sock, factory, config.accept_batch)
                acceptor.start()
                self._server = acceptor  # type: ignore[assignment]
            elif config.fd is not None:
                sock = socket.socket(fileno=config.fd)
                self._server = await loop.create_server(factory, sock=sock, backlog=config.backlog)
            else:
                self._server = await loop.create_server(
                    factory, config.host, config.port, backlog=config.backlog, reuse_address=True)
        except BaseException:
            state.clock.stop()
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
        if self.config.uds:
            return f"unix:{self.config.uds}"
        host = self.config.host if self.config.fd is None else self.sockets[0].getsockname()[0]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

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
        state.clock.stop()
        if state.rt is not None:
            state.rt.stop()
        await self.app.shutdown()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def serve(app: App | Router, **settings: Any) -> Server:
    """Start serving ``app`` inside the running loop; returns once it is listening."""
    config = Config.from_settings(**settings)
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


def configure_logging(level: str) -> None:
    """Give aioserve's loggers a stderr handler unless the application configured logging already."""
    root = logging.getLogger()
    base = logging.getLogger("aioserve")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise SystemExit(f"aioserve: error: unknown log level {level!r} (use debug, info, warning, error, critical)")
    base.setLevel(numeric)
    if not root.handlers and not base.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        base.addHandler(handler)
        base.propagate = False


def run(app: App | Router, **settings: Any) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully. Blocks."""
    config = Config.from_settings(**settings)
    configure_logging(config.log_level)
    with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
        runner.run(_serve_until_signalled(app, config))


async def _serve_until_signalled(app: App | Router, config: Config) -> None:
    loop = asyncio.get_running_loop()
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
    except OSError as exc:
        where = config.uds or (f"fd {config.fd}" if config.fd is not None else f"{config.host}:{config.port}")
        raise SystemExit(f"aioserve: error: cannot listen on {where}: {exc.strerror or exc}") from None
    logger.info("Listening on %s (loop: %s, workers: 1, pid: %d)", server.url, loop_name(loop), os.getpid())
    await stop.wait()
    await server.shutdown(config.timeout_graceful_shutdown)
    logger.info("Stopped")
