"""Route tree: maps a request path to the Endpoint registered for its shape.

Routes live in a segment-level radix tree, so the cost of a lookup depends on
the number of path segments, not on how many routes exist.  Fully static
patterns skip the tree entirely: they sit in a plain dict keyed by the exact
path, so the commonest lookup is one hash probe.

A parameter is always a whole segment (``/users/{id:int}``); that keeps both
matching and conflict detection simple and predictable.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable, Iterable, Iterator

__all__ = ["RouteError", "Endpoint", "RadixTree", "parse_pattern", "register_converter"]


class RouteError(ValueError):
    """A bad route pattern or a conflicting registration. Message is ONE clear line naming the pattern(s)."""


class _Converter:
    """How one parameter kind matches a segment and turns it into a value."""

    __slots__ = ("name", "regex", "convert", "priority", "is_path", "parse")

    def __init__(self, name: str, regex: str, convert: Callable[[str], Any], priority: int, is_path: bool,
                 parse: Callable[[str], Any] | None = None) -> None:
        self.name = name
        self.regex = re.compile(regex)
        self.convert = convert
        self.priority = priority
        self.is_path = is_path
        # segment -> value, or NO_MATCH; built-ins may bring a faster one than regex + convert
        self.parse = parse or self._parse

    def _parse(self, seg: str) -> Any:
        if self.regex.fullmatch(seg) is None:
            return NO_MATCH
        try:
            return self.convert(seg)
        except ValueError:  # e.g. a custom converter's veto
            return NO_MATCH

    def sort_key(self) -> tuple[bool, int, str]:
        # "path" swallows the rest of the URL, so it must be tried after everything else.
        return (self.is_path, self.priority, self.name)


NO_MATCH: Any = object()
# The lookup cache of parameterised paths: at most this many entries, of paths at most this long
# (so at most ~200 KiB of keys, whatever clients send).
CACHE_ENTRIES = 1024
CACHE_PATH_LENGTH = 200


def _parse_int(seg: str) -> Any:
    # The same as fullmatch("[0-9]+") then int(), without the regex; int() refuses past 4300 digits.
    if seg.isdigit() and seg.isascii():
        try:
            return int(seg)
        except ValueError:
            return NO_MATCH
    return NO_MATCH


def _parse_str(seg: str) -> Any:
    return seg if seg else NO_MATCH  # "[^/]+": a segment never contains "/"


_CONVERTERS: dict[str, _Converter] = {}
_HEX = "[0-9a-fA-F]"
for _c in (
    _Converter("int", "[0-9]+", int, 10, False, _parse_int),
    _Converter("float", r"[0-9]+(?:\.[0-9]+)?", float, 20, False),
    _Converter("uuid", f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}", uuid.UUID, 30, False),
    _Converter("str", "[^/]+", str, 90, False, _parse_str),
    _Converter("path", ".*", str, 1000, True),
):
    _CONVERTERS[_c.name] = _c
del _c
_BUILTINS = frozenset(_CONVERTERS)


def register_converter(name: str, regex: str, convert: Callable[[str], Any], priority: int = 50) -> None:
    """Extensible converter registry (like Starlette's, but tiny).

    ``regex`` must match a whole segment (it is applied with fullmatch and a
    segment never contains "/").  ``convert`` may raise ValueError to reject a
    segment the regex let through.  Lower ``priority`` is tried first; the
    built-ins use int=10, float=20, uuid=30, str=90.  Re-registering a custom
    name replaces it for patterns parsed afterwards; built-ins are fixed.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"converter name {name!r} must be a valid identifier")
    if name in _BUILTINS:
        raise ValueError(f"converter {name!r} is built in and cannot be replaced; pick another name")
    if not callable(convert):
        raise ValueError(f"converter {name!r}: convert must be callable, got {convert!r}")
    if not isinstance(priority, int):
        raise ValueError(f"converter {name!r}: priority must be an int, got {priority!r}")
    try:
        _CONVERTERS[name] = _Converter(name, regex, convert, priority, False)
    except (re.error, TypeError) as exc:
        raise ValueError(f"converter {name!r}: invalid regex {regex!r} ({exc})") from None


class Endpoint:
    """Everything registered for one path shape."""

    __slots__ = ("pattern", "handlers", "routes", "allow", "cacheable")

    def __init__(self, pattern: str, cacheable: bool = True) -> None:
        self.pattern = pattern
        # Built-in converters give immutable values (int, float, UUID, str), safe to share between
        # requests from the lookup cache; a custom converter's value might not be.
        self.cacheable = cacheable
        # METHOD -> (route object, param names in order); names may differ per method.
        self.handlers: dict[str, tuple[object, tuple[str, ...]]] = {}
        # METHOD -> route object, HEAD included where GET answers it: what a request looks up.
        self.routes: dict[str, object] = {}
        self.allow = ""

    def _refresh(self) -> None:
        # Precomputed once per registration so lookups and 405 responses cost nothing extra.
        routes = {method: route for method, (route, _) in self.handlers.items()}
        if "GET" in routes:
            routes.setdefault("HEAD", routes["GET"])
        self.routes.clear()
        self.routes.update(routes)  # in place: RadixTree.static_routes shares this dict
        self.allow = ", ".join(sorted(routes))

    def __repr__(self) -> str:
        return f"<Endpoint {self.pattern} [{self.allow}]>"


class _Node:
    """One segment position: static children by text, parameter children by priority."""

    __slots__ = ("static", "params", "endpoint")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.params: list[tuple[_Converter, _Node]] = []
        self.endpoint: Endpoint | None = None

    def param_child(self, conv: _Converter) -> _Node:
        for existing, child in self.params:
            if existing.name == conv.name:
                return child
        child = _Node()
        self.params.append((conv, child))
        self.params.sort(key=lambda pair: pair[0].sort_key())
        return child


def _parse(pattern: str) -> tuple[list[str | _Converter], tuple[str, ...]]:
    """Split a pattern into static strings / converters, validating as we go."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise RouteError(f"route pattern {pattern!r} must start with '/'")
    parts = pattern[1:].split("/")
    segments: list[str | _Converter] = []
    names: list[str] = []
    for index, seg in enumerate(parts):
        if "{" not in seg and "}" not in seg:
            segments.append(seg)
            continue
        if not (seg.startswith("{") and seg.endswith("}")) or seg.count("{") != 1 or seg.count("}") != 1:
            raise RouteError(
                f"route pattern {pattern!r}: segment {seg!r} has stray or unbalanced braces; "
                "a parameter must be a whole segment such as '{name}' or '{name:int}'"
            )
        name, sep, conv_name = seg[1:-1].partition(":")
        if not name.isidentifier():
            raise RouteError(f"route pattern {pattern!r}: parameter name {name!r} must be a valid Python identifier")
        if name in names:
            raise RouteError(f"route pattern {pattern!r}: parameter {name!r} appears twice; give each parameter a unique name")
        conv = _CONVERTERS.get(conv_name if sep else "str")
        if conv is None:
            known = ", ".join(sorted(_CONVERTERS))
            raise RouteError(f"route pattern {pattern!r}: unknown converter {conv_name!r} (known: {known})")
        if conv.is_path and index != len(parts) - 1:
            raise RouteError(f"route pattern {pattern!r}: '{{{name}:path}}' must be the last segment")
        segments.append(conv)
        names.append(name)
    return segments, tuple(names)


def _shape(segments: list[str | _Converter]) -> tuple[str, ...]:
    # Braces never occur in static segments, so "{int}" cannot collide with one.
    return tuple(s if isinstance(s, str) else "{" + s.name + "}" for s in segments)


def parse_pattern(pattern: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """-> (shape key segments, param names). Validates; raises RouteError.

    Param segments appear in the shape as "{converter}" so that patterns
    differing only in parameter names share a shape (and hence conflict).
    """
    segments, names = _parse(pattern)
    return _shape(segments), names


def _show(pattern: str) -> str:
    # Keep error messages on one line even for patterns with odd characters.
    return pattern if pattern.isprintable() else repr(pattern)


def _walk(node: _Node, segs: list[str], i: int, values: list) -> Endpoint | None:
    """Depth-first search: static child, then params by priority, backtracking on failure.

    Where a node offers one way on (the usual shape) the walk simply moves down without recursing;
    it recurses only to try an alternative that may fail. Recursion depth is bounded by the deepest
    registered pattern, not by the request path, because the walk stops when no child matches.
    """
    end = len(segs)
    while i < end:
        seg = segs[i]
        child = node.static.get(seg)
        params = node.params
        if not params:
            if child is None:
                return None
            node = child
            i += 1
            continue
        if child is not None:
            mark = len(values)
            found = _walk(child, segs, i + 1, values)
            if found is not None:
                return found
            del values[mark:]
        last = params[-1]
        for pair in params:
            conv, child = pair
            if conv.is_path:
                if child.endpoint is not None:
                    values.append("/".join(segs[i:]))
                    return child.endpoint
                continue
            value = conv.parse(seg)
            if value is NO_MATCH:
                continue
            if pair is last:  # no alternative left here: move down
                values.append(value)
                node = child
                break
            mark = len(values)
            values.append(value)
            found = _walk(child, segs, i + 1, values)
            if found is not None:
                return found
            del values[mark:]
        else:
            return None
        i += 1
    return node.endpoint


def _walk_all(node: _Node, segs: list[str], i: int, values: list) -> Iterator[tuple[Endpoint, tuple]]:
    """Every endpoint matching ``segs[i:]`` below ``node``, with its values, in ``_walk``'s order (so
    the first is ``_walk``'s answer). For the slow paths only: a method the first match lacks, a 405's Allow."""
    if i == len(segs):
        if node.endpoint is not None:
            yield node.endpoint, tuple(values)
        return
    seg = segs[i]
    child = node.static.get(seg)
    if child is not None:
        yield from _walk_all(child, segs, i + 1, values)
    for conv, child in node.params:
        if conv.is_path:
            if child.endpoint is not None:
                yield child.endpoint, (*values, "/".join(segs[i:]))
            continue
        value = conv.parse(seg)
        if value is NO_MATCH:
            continue
        values.append(value)
        yield from _walk_all(child, segs, i + 1, values)
        values.pop()


class RadixTree:
    """All routes of an app; ``match`` is called once per request."""

    __slots__ = ("_root", "_static", "static_routes", "_shapes", "_owners", "_endpoints", "_count", "_cache",
                 "_method_cache")

    def __init__(self) -> None:
        self._root = _Node()
        # Recent parameterised paths -> (endpoint, values): a repeated path (the same user, the same
        # merchant) skips the walk. Bounded in entries and key length, emptied when full or when a
        # route is added (which may change what a path matches).
        self._cache: dict[str, tuple[Endpoint, tuple]] = {}
        # The same for (method, path) found by ``match_method``: the first match lacked the method.
        self._method_cache: dict[tuple[str, str], tuple[Endpoint, tuple]] = {}
        self._static: dict[str, Endpoint] = {}  # exact path -> Endpoint, for param-free patterns
        self.static_routes: dict[str, dict[str, object]] = {}  # exact path -> {METHOD: route}
        self._shapes: dict[tuple[str, ...], Endpoint] = {}
        self._owners: dict[tuple[tuple[str, ...], str], str] = {}  # (shape, method) -> pattern
        self._endpoints: list[Endpoint] = []
        self._count = 0

    def add(self, pattern: str, methods: Iterable[str], route: object) -> Endpoint:
        """Register ``route`` for ``methods`` on ``pattern``; all-or-nothing on error.

        A bare string is taken as one method.  Methods are upper-cased; HEAD
        is not added to handlers (only to ``allow``).
        """
        segments, names = _parse(pattern)
        shape = _shape(segments)
        if isinstance(methods, str):
            methods = (methods,)
        wanted: list[str] = []
        for method in methods:
            if not isinstance(method, str) or not method or not method.isprintable() or " " in method:
                raise RouteError(f"route {_show(pattern)}: invalid method {method!r}")
            method = method.upper()
            if method not in wanted:
                wanted.append(method)
        if not wanted:
            raise RouteError(f"route {_show(pattern)} has no methods; pass at least one, e.g. ['GET']")

        self._cache.clear()
        self._method_cache.clear()
        endpoint = self._shapes.get(shape)
        if endpoint is None:
            endpoint = Endpoint(pattern, all(isinstance(s, str) or s.name in _BUILTINS for s in segments))
            if all(isinstance(s, str) for s in segments):
                self._static[pattern] = endpoint
                self.static_routes[pattern] = endpoint.routes
            else:
                node = self._root
                for seg in segments:
                    node = node.static.setdefault(seg, _Node()) if isinstance(seg, str) else node.param_child(seg)
                node.endpoint = endpoint
            self._shapes[shape] = endpoint
            self._endpoints.append(endpoint)
        else:
            for method in wanted:
                if method in endpoint.handlers:
                    other = self._owners[(shape, method)]
                    raise RouteError(
                        f"route {method} {_show(pattern)} conflicts with {method} {_show(other)}: "
                        "they match exactly the same paths"
                    )

        for method in wanted:
            endpoint.handlers[method] = (route, names)
            self._owners[(shape, method)] = pattern
        endpoint._refresh()
        self._count += len(wanted)
        return endpoint

    def match(self, path: str) -> tuple[Endpoint, tuple] | None:
        """Find the Endpoint for a request path (no query string, not decoded).

        Returns (endpoint, converted param values in pattern order), or None.
        The method is not considered: the first endpoint in match order (static before parameters,
        parameters by converter priority) is the answer. When it lacks the request's method, the caller
        asks ``match_method`` for a later one that has it, and ``allow`` for a 405's Allow.
        """
        endpoint = self._static.get(path)
        if endpoint is not None:
            return endpoint, ()
        return self.match_params(path)

    def match_params(self, path: str) -> tuple[Endpoint, tuple] | None:
        """``match`` for a path already known not to be a static pattern: the cache, else the walk."""
        found = self._cache.get(path)
        if found is not None:
            return found
        if path[:1] != "/":
            return None
        values: list = []
        endpoint = _walk(self._root, path[1:].split("/"), 0, values)
        if endpoint is None:
            return None  # not cached: a scan of unknown paths must not evict the known ones
        found = endpoint, tuple(values)
        if endpoint.cacheable and len(path) <= CACHE_PATH_LENGTH:
            cache = self._cache
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()  # cheaper than tracking recency; a hot path is back after one walk
            cache[path] = found
        return found

    def match_all(self, path: str) -> Iterator[tuple[Endpoint, tuple]]:
        """Every (endpoint, values) whose pattern matches ``path``, in match order (``match``'s first)."""
        endpoint = self._static.get(path)
        if endpoint is not None:
            yield endpoint, ()
        if path[:1] == "/":
            yield from _walk_all(self._root, path[1:].split("/"), 0, [])

    def match_method(self, method: str, path: str) -> tuple[Endpoint, tuple] | None:
        """The first (endpoint, values) in match order whose endpoint has a route for ``method``, or None.

        For a request whose first match (``match``) lacks its method: ``GET /users/me`` does not hide
        ``DELETE /users/{uid}`` from ``DELETE /users/me``. Found answers are cached like ``match``'s.
        """
        key = (method, path)
        found = self._method_cache.get(key)
        if found is not None:
            return found
        for found in self.match_all(path):
            endpoint = found[0]
            if method in endpoint.routes:
                if endpoint.cacheable and len(path) <= CACHE_PATH_LENGTH:
                    cache = self._method_cache
                    if len(cache) >= CACHE_ENTRIES:
                        cache.clear()
                    cache[key] = found
                return found
        return None

    def allow(self, path: str) -> str:
        """The ``Allow`` value for ``path``: the methods of every endpoint matching it ("" for none)."""
        methods: set[str] = set()
        for endpoint, _ in self.match_all(path):
            methods.update(endpoint.routes)
        return ", ".join(sorted(methods))

    def __len__(self) -> int:
        """Number of (pattern, method) registrations."""
        return self._count

    def endpoints(self) -> list[Endpoint]:
        """Endpoints in first-registration order (a copy)."""
        return list(self._endpoints)
