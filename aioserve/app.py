"""The application: routes, middleware, hooks and error handling.

The connection (``protocol.py``) asks the app two things per request: which route serves this method
and path (``resolve``), and, when something goes wrong, what to answer (``handle_error``). With no
middleware the connection calls the handler directly; with middleware it calls ``app.entry``, a chain
composed once at startup, so an app without middleware pays nothing for the feature.
"""
from __future__ import annotations

import logging
import os
import traceback
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

import orjson

from .errors import HTTPError
from .radix import RadixTree
from .request import Request
from .response import Response, StreamResponse
from .router import Route, Router
from .wire import JSON_TYPE, OCTET_TYPE, REASONS, TEXT_TYPE

if TYPE_CHECKING:
    from .compression import CompressionSettings

logger = logging.getLogger("aioserve.error")

Middleware = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]
#: Runs on every response before it is encoded (compression, CORS): may change it or return another.
Finisher = Callable[[Request, Response], Response]
F = TypeVar("F", bound=Callable[..., Any])


class App(Router):
    """``App(debug=False)``: routes (the ``Router`` decorators), middleware, hooks, error handlers.

    Real-time budgets (see ``realtime.py``): ``deadline`` (seconds, for every route that does not set
    its own), ``deadline_header`` (the request header a client may tighten it with, in milliseconds),
    ``limit_in_flight`` (past it, new requests get 503 at once), ``adaptive_shedding`` (shed earlier
    while a route's recent p99 exceeds its deadline), ``retry_after`` (seconds, on 503s),
    ``server_timing`` (a ``Server-Timing`` header on every response).

    ``compress``: ``True`` or a ``CompressionSettings`` (compression.py) compresses responses the
    client accepts compressed. ``finishers`` run, in order, on every response (handler results,
    error answers, streams); ``compile()`` composes them into ``finish`` for the connection.
    """

    def __init__(
        self, *, debug: bool = False, deadline: float | None = None,
        deadline_header: str | None = "x-deadline-ms", limit_in_flight: int | None = None,
        adaptive_shedding: bool = False, retry_after: int = 1, server_timing: bool = False,
        compress: bool | CompressionSettings = False,
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
        self.metrics_path: str | None = None
        self.metrics_dir: str | None = None
        self.realtime: Any = None  # the running server's Realtime (realtime.py), set at start
        self.tree = RadixTree()
        self.static_routes = self.tree.static_routes  # path -> {METHOD: route}: the connection's first probe
        self.middlewares: list[Middleware] = []
        self.startup_hooks: list[Callable[[], Awaitable[Any]]] = []
        self.shutdown_hooks: list[Callable[[], Awaitable[Any]]] = []
        self.exception_handlers: dict[Any, Callable[[Request, BaseException], Awaitable[Any]]] = {}
        self.entry: Callable[[Request], Awaitable[Response]] | None = None
        self.finishers: list[Finisher] = []
        self.finish: Finisher | None = None
        self.compression: Any = None  # the Compressor (compression.py) when compress= is set
        if compress:
            from .compression import Compressor

            self.compression = Compressor(None if compress is True else compress)
            self.finishers.append(self.compression.finish)

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
        from .realtime import metrics_endpoint

        again = self.metrics_path == path
        self.metrics_path = path
        self.metrics_dir = multiprocess_dir
        if again:
            return
        self.add_route(path, metrics_endpoint, ("GET",), name="metrics", deadline=None, shed=False)

    def static(self, prefix: str, directory: str | os.PathLike[str], *, html: bool = False,
               follow_symlinks: bool = False, cache_control: str | None = None) -> None:
        """Serve the files under ``directory`` at ``prefix`` (GET and HEAD; see staticfiles.py).

        ``html``: a directory's ``index.html`` answers for it; ``follow_symlinks``: symlinks that stay
        inside ``directory`` are followed; ``cache_control``: a ``Cache-Control`` value for every file.
        """
        from .staticfiles import StaticFiles

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
        """Handle an exception class (and subclasses), or an HTTP status code raised as ``HTTPError``."""
        def decorator(func: F) -> F:
            self.exception_handlers[key] = func
            return func

        return decorator

    # -- lifecycle -----------------------------------------------------------------------------
    def compile(self) -> None:
        """Work out, once, what the per-request path needs: the finishers and the middleware chain."""
        self.finish = _compose(tuple(self.finishers))
        if not self.middlewares:
            self.entry = None
            return
        call: Callable[[Request], Awaitable[Response]] = self._endpoint
        for mw in reversed(self.middlewares):
            call = _wrap(mw, call)
        self.entry = call

    async def startup(self) -> None:
        self.compile()
        for hook in self.startup_hooks:
            await hook()

    async def shutdown(self) -> None:
        for hook in reversed(self.shutdown_hooks):
            try:
                await hook()
            except Exception:
                logger.exception("shutdown hook %r failed", hook)

    def run(self, **settings: Any) -> None:
        """Serve until SIGINT/SIGTERM. Takes every CLI setting as a keyword (``port=8000``, ``loop="uvloop"``...)."""
        from .server import run

        run(self, **settings)

    # -- per request -----------------------------------------------------------------------------
    def resolve(self, method: str, path: str) -> tuple[Route | None, list[Any] | tuple[()], HTTPError | None]:
        """-> (route, its path parameter values in pattern order, None), or (None, (), the 404/405 error)."""
        found = self.tree.match(path)
        if found is None:
            return None, (), HTTPError(404)
        endpoint, values = found
        route = endpoint.routes.get(method)
        if route is None:
            return None, (), HTTPError(405, headers={"Allow": endpoint.allow})
        return route, values, None  # type: ignore[return-value]

    async def _endpoint(self, request: Request) -> Response:
        """Innermost layer under middleware: always returns a Response."""
        route = request.route
        try:
            if route is None:
                raise request._error or HTTPError(404)
            result = await route.handler(request, **request.path_params)
        except Exception as exc:
            return await self.handle_error(request, exc)
        return to_response(result)

    async def handle_error(self, request: Request, exc: BaseException) -> Response:
        handler = self._find_handler(exc)
        if handler is not None:
            try:
                return to_response(await handler(request, exc))
            except Exception as inner:
                exc = inner
                if isinstance(inner, HTTPError):
                    return error_response(inner)
        if isinstance(exc, HTTPError):
            return error_response(exc)
        logger.error("Unhandled exception in %s %s", request.method, request.path, exc_info=exc)
        if self.debug:
            body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            return Response(body, 500, content_type=TEXT_TYPE)
        return Response(b"Internal Server Error", 500, content_type=TEXT_TYPE)

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


def _wrap(mw: Middleware, call_next: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def layer(request: Request) -> Response:
        return to_response(await mw(request, call_next))

    return layer


def _compose(finishers: tuple[Finisher, ...]) -> Finisher | None:
    if not finishers:
        return None
    if len(finishers) == 1:
        return finishers[0]

    def finish(request: Request, response: Response) -> Response:
        for finisher in finishers:
            response = finisher(request, response)
        return response

    return finish


def error_response(exc: HTTPError) -> Response:
    detail = exc.detail
    if detail is None:
        response = Response(REASONS.get(exc.status, "Error"), exc.status, exc.headers, TEXT_TYPE)
    elif isinstance(detail, (dict, list)):
        response = Response(orjson.dumps(detail), exc.status, exc.headers, JSON_TYPE)
    else:
        response = Response(str(detail), exc.status, exc.headers, TEXT_TYPE)
    return response


def to_response(result: Any) -> Response:
    """Handler results: Response as is; str text; bytes octets; dict/list JSON; None 204."""
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return Response(result.encode("utf-8"), 200, None, TEXT_TYPE)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(bytes(result), 200, None, OCTET_TYPE)
    if isinstance(result, (dict, list)):
        return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), 200, None, JSON_TYPE)
    if result is None:
        return Response(b"", 204)
    raise TypeError(
        f"handler returned {type(result).__name__}; return a Response, str, bytes, dict, list or None"
    )


__all__ = ["App", "StreamResponse", "error_response", "to_response"]
