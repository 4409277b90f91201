"""Route declarations: the decorators shared by ``Router`` and ``App``.

A ``Router`` only collects routes; ``App.include(router, prefix=...)`` registers them in the app's
radix tree (``radix.py``), where conflicts are detected. Everything about a route (its pattern,
parameters, limits) is worked out here, once, at registration.
"""
from __future__ import annotations

import dis
import inspect
import re
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from .radix import RouteError, parse_pattern
from .response import Response

Handler = Callable[..., Awaitable[Any] | Any]
H = TypeVar("H", bound=Handler)

#: Marks a per-route setting left to the server-wide default.
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET", "__bool__": lambda self: False})()

# Opcodes through which a coroutine can give control back to the event loop.
_SUSPENDING_OPS = frozenset({"GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "YIELD_VALUE", "SEND"})


# RFC 9110 5.6.2: a method is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _methods(pattern: str, methods: Iterable[str] | str) -> tuple[str, ...]:
    """The route's methods, upper-cased and sorted: one string is one method (``methods="POST"``), and
    each must be an HTTP token, so a mistake fails here with one line rather than as a 405 later."""
    if isinstance(methods, str):
        methods = (methods,)
    wanted = set()
    for method in methods:
        if not isinstance(method, str) or _TOKEN.fullmatch(method) is None:
            raise RouteError(f"route {pattern!r}: method {method!r} is not an HTTP method name (a token "
                             "such as 'GET'); pass one name or a list of them, e.g. methods=['GET', 'POST']")
        wanted.add(method.upper())
    return tuple(sorted(wanted))


def can_suspend(handler: Callable[..., Any]) -> bool:
    """Whether a coroutine function contains an ``await``, ``async for`` or ``async with``.

    One that does not finishes on its first step, so the connection runs it inline (no task, no
    trip through the event loop). The answer is read from ``dis``; its code is never changed.
    Anything unusual (a wrapped or non-function callable) counts as "can suspend", which is always safe.
    """
    code = getattr(handler, "__code__", None)
    if code is None or inspect.unwrap(handler) is not handler:
        return True
    return any(ins.opname in _SUSPENDING_OPS for ins in dis.get_instructions(code))


class Route:
    """One handler for a pattern and a set of methods, with its per-route settings."""

    __slots__ = ("pattern", "methods", "handler", "name", "param_names", "max_body_size", "has_params",
                 "is_async", "inline", "positional", "access_log", "compress",
                 # real-time settings (realtime.py); ``budget`` is the deadline in force, set at startup
                 "deadline", "fallback", "shed", "budget", "estimate_key")

    def __init__(
        self,
        pattern: str,
        methods: Iterable[str],
        handler: Handler,
        name: str | None = None,
        max_body_size: int | None = UNSET,
        access_log: bool = True,
        deadline: float | None = UNSET,
        fallback: Handler | None = None,
        shed: bool = True,
        compress: bool = True,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler {handler!r} for {pattern} must be a function ('async def' or 'def')")
        self.pattern = pattern
        self.methods = _methods(pattern, methods)
        if not self.methods:
            raise RouteError(f"route {pattern} has no methods")
        self.handler = handler
        self.name = name or getattr(handler, "__name__", pattern)
        _, self.param_names = parse_pattern(pattern)
        self.has_params = bool(self.param_names)
        if max_body_size is not UNSET and max_body_size is not None and max_body_size < 0:
            raise ValueError(f"max_body_size for {pattern} must be >= 0 or None")
        self.max_body_size = max_body_size
        # A plain ``def`` runs inline on the event loop (for CPU-light work that never blocks); so
        # does an ``async def`` that never awaits, driven one step. Everything else gets a task.
        self.is_async = inspect.iscoroutinefunction(handler)
        self.inline = not self.is_async or not can_suspend(handler)
        self.access_log = access_log  # False: no access log line for this route (health checks)
        _check_signature(handler, pattern, self.param_names)
        self.positional = _takes_positionally(handler, self.param_names)
        if deadline is not UNSET and deadline is not None and not deadline > 0:
            raise ValueError(f"deadline for {pattern} must be > 0 seconds, or None for no deadline")
        if fallback is not None:
            if not inspect.iscoroutinefunction(fallback):
                raise TypeError(f"fallback for {pattern} must be an 'async def' function")
            _check_signature(fallback, pattern, self.param_names)
        self.deadline = deadline  # UNSET: the app's; None: no deadline on this route
        self.fallback = fallback  # answers when the deadline passes, instead of 503
        self.shed = shed  # False: never refused by load shedding (e.g. /metrics, health checks)
        self.budget: float | None = None
        # What the real-time plug-in keeps this route's estimates (admission, adaptive deadline) under:
        # the pattern, or methods and pattern when routes share the pattern (set at startup).
        self.estimate_key = pattern
        self.compress = compress  # False: the app's compression (compression.py) leaves it alone

    def with_prefix(self, prefix: str) -> Route:
        return Route(_join(prefix, self.pattern), self.methods, self.handler, self.name, self.max_body_size,
                     self.access_log, self.deadline, self.fallback, self.shed, self.compress)

    def __repr__(self) -> str:
        return f"Route({'|'.join(self.methods)} {self.pattern} -> {self.name})"


class WebSocketRoute(Route):
    """A WebSocket endpoint: ``websocket`` is the handler the connection hands an upgraded socket to.

    To plain HTTP it is a GET route whose handler answers 426 (``Upgrade: websocket``), so a request
    without the upgrade needs nothing special from the connection. ``http`` replaces that answer (the
    ASGI adapter's catch-all serves GET and the WebSocket handshake on the same paths); it must take
    the path parameters the way ``handler`` does.
    """

    __slots__ = ("websocket",)

    def __init__(self, pattern: str, handler: Handler, name: str | None = None, access_log: bool = True,
                 deadline: float | None = UNSET, http: Handler | None = None) -> None:
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"WebSocket handler {getattr(handler, '__qualname__', handler)!r} for {pattern} must be an 'async def' function")
        super().__init__(pattern, ("GET",), http or _upgrade_required, name or getattr(handler, "__name__", pattern),
                         access_log=access_log, deadline=deadline, shed=True)  # the deadline covers the handshake only
        _check_signature(handler, pattern, self.param_names)
        self.websocket = handler
        self.positional = _takes_positionally(handler, self.param_names)

    def with_prefix(self, prefix: str) -> Route:
        http = None if self.handler is _upgrade_required else self.handler
        return WebSocketRoute(_join(prefix, self.pattern), self.websocket, self.name, self.access_log, self.deadline, http)

    def __repr__(self) -> str:
        return f"WebSocketRoute({self.pattern} -> {self.name})"


async def _upgrade_required(request: Any, *values: Any, **named: Any) -> Any:
    """The HTTP answer of a WebSocket route: 426, naming the protocol to upgrade to (RFC 9110 15.5.22)."""
    return Response(b"This is a WebSocket endpoint: upgrade to websocket\n", 426, {"Upgrade": "websocket"},
                    "text/plain; charset=utf-8")


def _join(prefix: str, pattern: str) -> str:
    if not prefix:
        return pattern
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise RouteError(f"prefix {prefix!r} must start with '/' and not end with '/'")
    return prefix if pattern == "/" else prefix + pattern


def _takes_positionally(handler: Handler, names: tuple[str, ...]) -> bool:
    """Whether ``handler(request, *values)`` binds each path parameter to its name.

    Then a request passes its parameter values positionally, with no keyword dict to build.
    """
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return False
    if len(params) < 1 + len(names) or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        return False
    return all(p.name == name and p.kind is p.POSITIONAL_OR_KEYWORD for p, name in zip(params[1:], names))


def _check_signature(handler: Handler, pattern: str, names: tuple[str, ...]) -> None:
    """Fail at registration, not at the first request, when the handler cannot take its parameters."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # builtins, odd callables: trust the user
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [n for n in names if n not in accepted]
    if missing:
        raise RouteError(
            f"handler {handler.__qualname__} for {pattern} must accept the path parameter(s) {', '.join(missing)}"
        )


class Router:
    """Collects routes with decorators; servable on its own (the CLI wraps it in a default ``App``)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add_route(
        self, path: str, handler: Handler, methods: Iterable[str] | str = ("GET",), *,
        name: str | None = None, max_body_size: int | None = UNSET, access_log: bool = True,
        deadline: float | None = UNSET, fallback: Handler | None = None, shed: bool = True,
        compress: bool = True,
    ) -> Route:
        route = Route(path, methods, handler, name, max_body_size, access_log, deadline, fallback, shed,
                      compress)
        self._add(route)
        return route

    def _add(self, route: Route) -> None:
        self.routes.append(route)

    def route(
        self, path: str, methods: Iterable[str] | str | None = None, *, name: str | None = None,
        max_body_size: int | None = UNSET, access_log: bool = True, deadline: float | None = UNSET,
        fallback: Handler | None = None, shed: bool = True, compress: bool = True,
    ) -> Callable[[H], H]:
        """``deadline`` (seconds) overrides the app's (None: none here); ``fallback`` answers when it
        passes; ``shed=False`` exempts the route from load shedding; ``compress=False`` from the
        app's compression."""
        def decorator(handler: H) -> H:
            self.add_route(path, handler, methods or ("GET",), name=name, max_body_size=max_body_size,
                           access_log=access_log, deadline=deadline, fallback=fallback, shed=shed,
                           compress=compress)
            return handler

        return decorator

    def websocket(self, path: str, *, name: str | None = None, access_log: bool = True,
                  deadline: float | None = UNSET, http: Handler | None = None) -> Callable[[H], H]:
        """``@app.websocket("/ws/{room}")`` on ``async def handler(ws, room)`` (see ``websocket.py``).
        ``deadline`` (default: the app's) is the handshake's budget: accept() or refuse within it, or
        the client gets 503; an open WebSocket has no deadline. ``http`` answers a plain GET on the
        same path (default: 426 Upgrade Required)."""
        def decorator(handler: H) -> H:
            self._add(WebSocketRoute(path, handler, name, access_log, deadline, http))
            return handler

        return decorator

    def get(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route(path, ["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route(path, ["POST"], **options)

    def put(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route(path, ["PUT"], **options)

    def patch(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route(path, ["PATCH"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route(path, ["DELETE"], **options)

    def options(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route(path, ["OPTIONS"], **options)

    def head(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route(path, ["HEAD"], **options)

    def include(self, router: Router, prefix: str = "") -> None:
        """Add every route of ``router`` under ``prefix`` (e.g. ``"/api"``)."""
        for route in router.routes:
            self._add(route.with_prefix(prefix))
