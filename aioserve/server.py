"""Server lifecycle: listen, serve, and shut down in order.

``serve()`` starts listening inside a running loop and returns a ``Server`` (``run()``, in
``processes.py``, owns a loop, signals and worker processes around it). Shutdown order: stop
accepting, close idle connections, let in-flight requests finish (answered with ``Connection: close``)
until the graceful timeout, cancel what is left, run the shutdown hooks.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any, Callable

from .accept import BatchAcceptor, listening_socket
from .app import App
from .asgi import asgi_app, is_asgi
from .config import Config, SettingError
from .connection import Connection
from .realtime import Realtime
from .router import Router
from .shared import ServerState
from .sockets import BindError, bind_unix, describe, remove_unix, socket_url
from .tls import make_ssl_context

logger = logging.getLogger("aioserve")

#: How long a closing TLS connection waits for the client's close_notify (asyncio's and uvloop's
#: default is 30 s). Our own bytes and close_notify are sent first; a client that keeps an idle
#: keep-alive connection in a pool never answers, and until it does the connection stays open: it
#: counts against limit_connections and graceful shutdown waits for it. A client reading the end of
#: a response has this long after the server's close to take what the kernel cannot hold.
TLS_SHUTDOWN_TIMEOUT = 5.0

__all__ = ["Server", "loop_factory", "loop_name", "serve", "servable"]


class Server:
    """A listening server: ``port``, ``sockets``, ``await shutdown(timeout)``."""

    def __init__(self, app: App | Router, config: Config, sock: socket.socket | None = None) -> None:
        if not isinstance(app, App):
            if isinstance(app, Router):
                app = App.from_router(app)
            elif is_asgi(app):  # an ASGI 3 callable (Starlette, FastAPI...): served through an App (asgi.py)
                app = asgi_app(app, root_path=config.root_path, lifespan=config.lifespan)
            else:
                raise TypeError(f"cannot serve {type(app).__name__}: expected an aioserve App or Router")
        self.app = app
        self.config = config
        self.state: ServerState | None = None
        self._server: asyncio.AbstractServer | None = None
        self._closed = asyncio.Event()
        self._sock = sock  # already listening (a worker's inherited socket); else bound in start()
        self._unix_path: str | None = None  # bound here: the file is removed at shutdown
        self._realtime: Realtime | None = None  # deadlines, shedding, metrics (realtime.py), when used

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        ssl_ctx = make_ssl_context(config)
        state = self.state = ServerState(self.app, config, loop)
        if config.deadline is not None and self.app.deadline is None:  # server-wide default budget
            self.app.deadline = config.deadline
        if config.metrics and self.app.metrics_path != config.metrics:
            self.app.enable_metrics(config.metrics)
        await self.app.startup()
        state.clock.start(loop)
        realtime = self._realtime = Realtime(self.app, config, state) if Realtime.wanted(self.app, config) else None
        if realtime is not None:
            state.observer = realtime
            realtime.start()

        def factory() -> Connection:
            return Connection(state)

        tls: dict[str, Any] = {"ssl": ssl_ctx}
        if ssl_ctx is not None:
            tls["ssl_shutdown_timeout"] = TLS_SHUTDOWN_TIMEOUT
            if config.timeout_header:  # a silent client is cut as on plain HTTP, not after the loop's 60 s
                tls["ssl_handshake_timeout"] = config.timeout_header

        try:
            _check_task_factory(loop)
            sock = self._sock
            if sock is None and config.uds:
                sock = bind_unix(config.uds, config.backlog)
                self._unix_path = config.uds
            elif sock is None and config.fd is not None:
                sock = socket.socket(fileno=config.fd)
            elif sock is None and config.accept_batch and ssl_ctx is None and _is_ip(config.host):
                sock = listening_socket(config.host, config.port, config.backlog)
            if sock is not None and sock.family == socket.AF_UNIX:
                self._server = await loop.create_unix_server(factory, sock=sock, backlog=config.backlog, **tls)
            elif sock is not None and config.accept_batch and ssl_ctx is None and _can_watch(loop):
                sock.listen(config.backlog)
                acceptor = BatchAcceptor(loop, sock, factory, config.accept_batch)
                acceptor.start()
                self._server = acceptor  # type: ignore[assignment]
            elif sock is not None:
                self._server = await loop.create_server(factory, sock=sock, backlog=config.backlog, **tls)
            else:
                self._server = await loop.create_server(
                    factory, config.host, config.port, backlog=config.backlog, reuse_address=True, **tls)
        except BaseException as exc:
            state.clock.stop()
            state.timers.close()
            if realtime is not None:
                realtime.stop()
            await self.app.shutdown()
            if isinstance(exc, OSError) and not isinstance(exc, BindError):  # say which address
                raise BindError(exc.errno, f"cannot listen on {describe(config)}: {exc.strerror or exc}") from None
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
                busy = sum(1 for conn in state.connections if conn.outstanding_tasks())
                logger.warning("Graceful shutdown timed out with %d connection(s) open, %d with requests "
                               "in progress; cancelling", len(state.connections), busy)
        for conn in list(state.connections):
            tasks = conn.outstanding_tasks()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
        if self._unix_path is not None:
            remove_unix(self._unix_path)
        state.clock.stop()
        state.timers.close()
        if state.access is not None:
            state.access.flush()  # the lines of the last answers, not left for a loop turn that may not come
        if self._realtime is not None:
            self._realtime.stop()
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


def a_type(obj: Any) -> str:
    """``an App``, ``a Starlette``: what ``obj`` is, for an error message."""
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def servable(target: Any, config: Config, call_factory: bool = True) -> Any:
    """What ``serve()`` and ``run()`` serve for ``target``, with the CLI's meaning of ``--factory`` and
    ``--interface``: ``factory`` calls the target to get the app; ``interface="asgi"`` serves it through
    the ASGI adapter (asgi.py), an App included (it is an ASGI 3 app itself, ``App.__call__``) and a
    Router by its default App; ``"aioserve"`` requires an App or a Router; ``"auto"`` leaves it to
    ``Server``, which serves an App or a Router as such and another callable as ASGI 3.
    ``call_factory=False`` (the reloader, which serves nothing) checks a factory and returns it uncalled."""
    app = target
    if config.factory:
        if isinstance(app, (App, Router)) or not callable(app):
            raise TypeError(f"factory=True was given but the app is {a_type(app)}, not a callable that returns one")
        if not call_factory:  # the reloader only watches files: the factory runs where the app is served
            return app
        app = app()
    if config.interface == "asgi":
        if isinstance(app, Router) and not isinstance(app, App):  # (an App is a Router too)
            app = App.from_router(app)
        elif not callable(app):
            raise TypeError(f"interface='asgi' was given but the app is {a_type(app)}, not an ASGI callable")
        return asgi_app(app, root_path=config.root_path, lifespan=config.lifespan)
    if config.interface == "aioserve" and not isinstance(app, (App, Router)):
        raise TypeError(f"interface='aioserve' was given but the app is {a_type(app)}, not an aioserve App or Router")
    return app


async def _nothing() -> None:
    pass


def _check_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    """A task factory the loop cannot use would fail every connection's task (an error logged each time,
    no answer): say so once, at start. uvloop 0.23 on Python 3.13 passes ``eager_start``, which
    ``asyncio.eager_task_factory`` refuses. The factory is taken off the loop, which could not otherwise
    be shut down (asyncio.Runner makes a task to close it)."""
    if loop.get_task_factory() is None:
        return
    probe = _nothing()
    try:
        loop.create_task(probe)
    except Exception as exc:
        probe.close()
        loop.set_task_factory(None)
        message = (f"the loop's task factory cannot make a task on this loop ({type(exc).__name__}: {exc}); "
                   "uvloop does not support asyncio.eager_task_factory: run on asyncio's loop or drop the factory")
        raise SettingError(message, message.replace("run on asyncio's loop", "use --loop asyncio")) from None


async def serve(app: Any, **settings: Any) -> Server:
    """Start serving ``app`` inside the running loop; returns once it is listening.

    ``app`` is an App, a Router or an ASGI 3 callable (or with ``factory=True`` a callable returning
    one); ``interface=`` says which, as the CLI's ``--interface`` (see ``servable()``)."""
    config = Config.from_settings(**settings)
    if config.workers > 1 or config.reload or config.limit_max_requests:
        logger.warning("serve() runs in the calling process and loop: workers, reload and limit_max_requests "
                       "apply to run() and the CLI only")
    server = Server(servable(app, config), config)
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
