"""The application: routes, middleware, hooks and error handling.

The connection (``connection.py``) asks the app two things per request: which route serves this method
and path (``resolve``), and, when something goes wrong, what to answer (``handle_error``). With no
middleware the connection calls the handler directly; with middleware it calls ``app.entry``, a chain
composed once at startup, so an app without middleware pays nothing for the feature. The same holds
for finishers (``finish``: CORS headers, compression), which see every answer as a ``Response``.

``App.run()`` serves the app in this process; the process layer (``processes.py``) provides it through
``set_runner``, because the app layer sits below the server and cannot import it.
"""
from __future__ import annotations

import inspect
import os
import traceback
from typing import Any, Awaitable, Callable, TypeVar

from .compression import CompressionSettings, Compressor
from .asgiapp import serve_asgi
from .cors import Cors
from .errors import HTTPError, error_logger
from .radix import RadixTree
from .request import Request
from .response import Response, StreamResponse
from .results import error_response, to_response
from .router import Route, Router, WebSocketRoute
from .staticfiles import StaticFiles
from .wire import TEXT_TYPE

Middleware = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]
#: Runs on every response before it is encoded (compression, CORS): may change it or return another.
Finisher = Callable[[Request, Response], Response]
#: A finisher's plain form: given a request, the content type of a plain 200 answer (a handler's str,
#: bytes, dict or list) and its size, the header lines the finisher would add, ready-made (``b""``:
#: none), or None when it must see a ``Response`` (to compress it, say).
PlainFinisher = Callable[[Request, str, int], "bytes | None"]
F = TypeVar("F", bound=Callable[..., Any])
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_runner: Callable[..., None] | None = None


def set_runner(runner: Callable[..., None]) -> None:
    """Install what ``App.run`` calls: ``runner(app, **settings)`` (the process layer does, at import)."""
    global _runner
    _runner = runner


class App(Router):
    """``App(debug=False)``: routes (the ``Router`` decorators), middleware, hooks, error handlers.

    Real-time budgets (see ``realtime.py``): ``deadline`` (seconds, for every route that does not set
    its own), ``deadline_header`` (the request header a client may tighten it with, in milliseconds),
    ``limit_in_flight`` (past it, new requests get 503 at once), ``adaptive_shedding`` (shed earlier
    while a route's recent p99 exceeds its deadline), ``retry_after`` (seconds, on 503s),
    ``server_timing`` (a ``Server-Timing`` header on every response), ``admission`` (admission control
    for every route with a deadline, on by default; ``False`` turns it off, see ``admission.py``).

    ``compress``: ``True`` or a ``CompressionSettings`` (compression.py) compresses responses the
    client accepts compressed. ``finishers`` run, in order, on every response (handler results,
    error answers, streams); ``compile()`` composes them into ``finish`` for the connection.
    """

    _asgi_compiled = False  # compile() has run (ASGI use without lifespan compiles on first call)

    def __init__(
        self, *, debug: bool = False, deadline: float | None = None,
        deadline_header: str | None = "x-deadline-ms", limit_in_flight: int | None = None,
        adaptive_shedding: bool = False, retry_after: int = 1, server_timing: bool = False,
        compress: bool | CompressionSettings = False, admission: bool = True,
    ) -> None:
        super().__init__()
        self.debug = debug
        if deadline is not None and not deadline > 0:
            raise ValueError("deadline must be > 0 seconds, or None")
        if limit_in_flight is not None and limit_in_flight < 1:
            raise ValueError("limit_in_flight must be >= 1, or None")
        self.deadline = deadline
        self.deadline_header = deadline_header.lower() if deadline_header else None
        self.limit_in_flight = limit_in_flight
        self.adaptive_shedding = adaptive_shedding
        self.retry_after = int(retry_after)
        self.server_timing = server_timing
        self.admission = admission
        self.metrics_path: str | None = None
        self.metrics_dir: str | None = None
        # What /metrics answers with: set by the running server's real-time plug-in (realtime.py).
        self.metrics_renderer: Callable[[], str] | None = None
        self.tree = RadixTree()
        self.static_routes = self.tree.static_routes  # path -> {METHOD: route}: the connection's first probe
        self.middlewares: list[Middleware] = []
        self.startup_hooks: list[Callable[[], Awaitable[Any]]] = []
        self.shutdown_hooks: list[Callable[[], Awaitable[Any]]] = []
        self.exception_handlers: dict[Any, Callable[[Request, BaseException], Awaitable[Any]]] = {}
        self.entry: Callable[[Request], Awaitable[Response]] | None = None
        self.finishers: list[Finisher] = []  # run in order on every answer (CORS, compression)
        self.finish: Finisher | None = None  # the finishers composed by compile(); None when there are none
        # The finishers that have a plain form (compression's and CORS's), and compile()'s composition
        # of them: None unless every finisher has one (a user's finisher sees every answer as a Response).
        self.plain_finishers: dict[Finisher, PlainFinisher] = {}
        self.finish_plain: PlainFinisher | None = None
        self.cors: Any = None  # cors.Cors, set by add_cors
        self.compression: Any = None  # the Compressor (compression.py) when compress= is set
        if compress:
            self.compression = Compressor(None if compress is True else compress)
            self.finishers.append(self.compression.finish)
            self.plain_finishers[self.compression.finish] = self.compression.plain

    @classmethod
    def from_router(cls, router: Router, **options: Any) -> App:
        app = cls(**options)
        app.include(router)
        return app

    # -- registration ------------------------------------------------------------------------------
    def _add(self, route: Route) -> None:
        self.tree.add(route.pattern, route.methods, route)
        self.routes.append(route)

    def enable_metrics(self, path: str = "/metrics", *, multiprocess_dir: str | None = None) -> None:
        """Serve request counts, latency histograms and load gauges at ``path`` (Prometheus text).

        With several workers, give ``multiprocess_dir`` (or set ``AIOSERVE_METRICS_DIR``): each worker
        writes its numbers there once a second and ``path`` answers for all of them.
        """
        again = self.metrics_path == path
        self.metrics_path = path
        self.metrics_dir = multiprocess_dir
        if again:
            return
        self.add_route(path, self._serve_metrics, ("GET",), name="metrics", deadline=None, shed=False)

    async def _serve_metrics(self, request: Request) -> Response:
        render = self.metrics_renderer
        if render is None:
            return Response(b"metrics are not running", 503, content_type=TEXT_TYPE)
        return Response(render(), content_type=PROMETHEUS_TYPE)

    def add_cors(
        self, allow_origins: Any = (), allow_origin_regex: str | None = None, allow_methods: Any = ("GET", "HEAD", "POST"),
        allow_headers: Any = (), expose_headers: Any = (), allow_credentials: bool = False, max_age: int = 600,
    ) -> None:
        """Answer CORS preflights and add CORS headers to every answer for allowed origins (``cors.py``).

        ``"*"`` in ``allow_origins``, ``allow_methods`` or ``allow_headers`` means any; credentials
        with any origin are refused (ValueError). Call before serving; a second call replaces the first.
        """
        cors = Cors(allow_origins, allow_origin_regex, allow_methods, allow_headers, expose_headers,
                    allow_credentials, max_age, allow_for=self._allow_for)
        cors.route = Route("/", ("OPTIONS",), cors.preflight, name="cors_preflight", deadline=None, shed=False)
        if self.cors is not None:
            self.finishers.remove(self.cors.finish)
            self.plain_finishers.pop(self.cors.finish, None)
        self.cors = cors
        self.finishers.append(cors.finish)
        self.plain_finishers[cors.finish] = cors.plain

    def _allow_for(self, path: str) -> str:
        return self.tree.allow(path)

    def static(self, prefix: str, directory: str | os.PathLike[str], *, html: bool = False,
               follow_symlinks: bool = False, cache_control: str | None = None) -> None:
        """Serve the files under ``directory`` at ``prefix`` (GET and HEAD; see staticfiles.py).

        ``html``: a directory's ``index.html`` answers for it; ``follow_symlinks``: symlinks that stay
        inside ``directory`` are followed; ``cache_control``: a ``Cache-Control`` value for every file.
        """
        StaticFiles(prefix, directory, html=html, follow_symlinks=follow_symlinks,
                    cache_control=cache_control).install(self)

    def middleware(self, func: F) -> F:
        """``async def mw(request, call_next) -> Response``. The first registered is the outermost."""
        self.middlewares.append(func)
        return func

    def on_startup(self, func: F) -> F:
        self.startup_hooks.append(func)
        return func

    def on_shutdown(self, func: F) -> F:
        self.shutdown_hooks.append(func)
        return func

    def exception_handler(self, key: type[BaseException] | int) -> Callable[[F], F]:
        """Handle an exception class (and subclasses), or an HTTP status code raised as ``HTTPError``.

        ``500`` also handles every exception that no class handler takes (the catch-all, as in
        Starlette); those are still logged (and re-raised in a test by ``raise_server_exceptions``)."""
        def decorator(func: F) -> F:
            self.exception_handlers[key] = func
            return func

        return decorator

    # -- lifecycle -----------------------------------------------------------------------------
    def compile(self) -> None:
        """Work out, once, what the per-request path needs: the middleware chain and the finishers."""
        self.finish = _compose(self.finishers)
        plains = [self.plain_finishers.get(finisher) for finisher in self.finishers]
        self.finish_plain = _compose_plain(plains) if plains and None not in plains else None  # type: ignore[arg-type]
        if not self.middlewares:
            self.entry = None
            return
        call: Callable[[Request], Awaitable[Response]] = self._endpoint
        for mw in reversed(self.middlewares):
            call = _wrap(mw, call)
        self.entry = call

    async def startup(self) -> None:
        self.compile()
        self._asgi_compiled = True
        for hook in self.startup_hooks:
            await hook()

    async def shutdown(self) -> None:
        for hook in reversed(self.shutdown_hooks):
            try:
                await hook()
            except Exception:
                error_logger.exception("shutdown hook %r failed", hook)

    def run(self, **settings: Any) -> None:
        """Serve until SIGINT/SIGTERM. Takes every CLI setting as a keyword (``port=8000``, ``loop="uvloop"``...)."""
        if _runner is None:  # pragma: no cover - importing aioserve installs it
            raise RuntimeError("import aioserve (the package) to run an app")
        _runner(self, **settings)

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        """ASGI 3: uvicorn, Granian or Hypercorn can serve this app (see asgiapp.py for what is lost)."""
        if not self._asgi_compiled:  # a server with lifespan off never ran startup()
            self._asgi_compiled = True
            self.compile()
        await serve_asgi(self, scope, receive, send)

    # -- per request -----------------------------------------------------------------------------
    def resolve(self, method: str, path: str) -> tuple[Route | None, list[Any] | tuple[()], HTTPError | None]:
        """-> (route, its path parameter values in pattern order, None), or (None, (), the 404/405 error)."""
        found = self.tree.match(path)
        if found is None:
            return None, (), HTTPError(404)
        endpoint, values = found
        route = endpoint.routes.get(method)
        if route is None:
            return self._resolve_method(method, path)
        return route, values, None  # type: ignore[return-value]

    def _resolve_method(self, method: str, path: str) -> tuple[Route | None, Any, HTTPError | None]:
        """``resolve`` when the first route matching ``path`` lacks ``method`` (or ``path`` is a static
        route for other methods only, which the connection probed first): a later match may have it.
        None has: a CORS preflight, or 405 with the methods of every route matching the path."""
        found = self.tree.match_method(method, path)
        if found is not None:
            return found[0].routes[method], found[1], None  # type: ignore[return-value]
        if method == "OPTIONS" and self.cors is not None:
            return self.cors.route, (), None  # a CORS preflight (cors.py)
        return None, (), HTTPError(405, headers={"Allow": self.tree.allow(path)})

    def resolve_websocket(self, path: str) -> tuple[WebSocketRoute | None, Any]:
        """The first WebSocket route matching ``path`` in match order, for an upgrade whose first GET
        match is an ordinary route: ``GET /ws/lobby`` must not hide ``websocket("/ws/{room}")``."""
        for endpoint, values in self.tree.match_all(path):
            route = endpoint.routes.get("GET")
            if type(route) is WebSocketRoute:
                return route, values
        return None, ()

    async def _endpoint(self, request: Request) -> Response:
        """Innermost layer under middleware: always returns a Response."""
        route = request.route
        try:
            if route is None:  # 404 or 405: ask again which (rare, and never on the fast path)
                raise self.resolve(request.method, request.path)[2] or HTTPError(404)
            result = route.handler(request, **request.path_params)
            if route.is_async or inspect.isawaitable(result):  # a plain def's wrapper may hand back a coroutine
                result = await result
            return to_response(result)  # in the try: a result that is no answer is a 500 the middleware sees
        except Exception as exc:
            return await self.handle_error(request, exc)

    async def handle_error(self, request: Request, exc: BaseException) -> Response:
        """The answer to ``exc``: its handler's (by class, or by status for an ``HTTPError``), else the
        ``HTTPError``'s own answer, else a 500. ``exception_handler(500)`` also answers any exception no
        handler takes (as Starlette's does); such an exception is still logged as unhandled first."""
        handler = self._find_handler(exc)
        if handler is None and not isinstance(exc, HTTPError):
            handler = self.exception_handlers.get(500)
            if handler is not None:
                self._log_unhandled(request, exc)
        if handler is not None:
            try:
                return to_response(await handler(request, exc))
            except Exception as inner:
                exc = inner
                if isinstance(inner, HTTPError):
                    return error_response(inner)
        if isinstance(exc, HTTPError):
            return error_response(exc)
        self._log_unhandled(request, exc)
        if self.debug:
            body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            return Response(body, 500, content_type=TEXT_TYPE)
        return Response(b"Internal Server Error", 500, content_type=TEXT_TYPE)

    @staticmethod
    def _log_unhandled(request: Request, exc: BaseException) -> None:
        error_logger.error("Unhandled exception in %s %s", request.method, request.path, exc_info=exc)

    def _find_handler(self, exc: BaseException) -> Callable[[Request, BaseException], Awaitable[Any]] | None:
        handlers = self.exception_handlers
        if not handlers:
            return None
        if isinstance(exc, HTTPError) and exc.status in handlers:
            return handlers[exc.status]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None


def _compose_plain(plains: list[PlainFinisher]) -> PlainFinisher:
    if len(plains) == 1:
        return plains[0]
    chain = tuple(plains)

    def plain(request: Request, content_type: str, size: int) -> bytes | None:
        lines = b""
        for each in chain:
            more = each(request, content_type, size)
            if more is None:
                return None
            lines += more
        return lines

    return plain


def _compose(finishers: list[Finisher]) -> Finisher | None:
    if not finishers:
        return None
    if len(finishers) == 1:
        return finishers[0]
    chain = tuple(finishers)

    def finish(request: Request, response: Response) -> Response:
        for finisher in chain:
            response = finisher(request, response)
        return response

    return finish


def _wrap(mw: Middleware, call_next: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def layer(request: Request) -> Response:
        return to_response(await mw(request, call_next))

    return layer


__all__ = ["App", "StreamResponse", "error_response", "set_runner", "to_response"]
