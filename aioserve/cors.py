"""Cross-origin resource sharing (the Fetch standard's CORS protocol), set up by ``App.add_cors``.

Two pieces, both worked out once when the app is configured (sets, a compiled regex, ready-made
header values), so a request pays a header lookup and a set probe:

- ``Cors.preflight``, the handler ``App.resolve`` gives an OPTIONS request on a path that has routes
  but no OPTIONS route of its own. A route that declares OPTIONS answers its own preflights.
- ``Cors.finish``, an ``App.finishers`` entry, run on every answer (handler results, errors, streams):
  it adds ``Access-Control-Allow-Origin`` (and credentials, exposed headers) for an allowed origin,
  nothing for another one, and ``Vary: Origin`` whenever the answer depends on the origin.

Credentials never combine with ``*``: ``add_cors(allow_origins=["*"], allow_credentials=True)`` is
refused at configuration, because echoing every origin with credentials hands every site on the web
the user's session. List the origins, or say so explicitly with ``allow_origin_regex``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from .datastructures import MutableHeaders, list_field
from .errors import HTTPError
from .request import Request
from .response import Response
from .wire import TEXT_TYPE, check_header

#: Request headers a browser may send without asking (Fetch's CORS-safelisted request headers).
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})
DEFAULT_METHODS = ("GET", "HEAD", "POST")
_VARY_ORIGIN = b"Vary: Origin\r\n"  # what finish adds to an answer that depends on the origin


class Cors:
    """One app's CORS policy. Build it with ``App.add_cors``; see the module docstring."""

    def __init__(
        self,
        allow_origins: Iterable[str] | str = (),
        allow_origin_regex: str | None = None,
        allow_methods: Iterable[str] | str = DEFAULT_METHODS,
        allow_headers: Iterable[str] | str = (),
        expose_headers: Iterable[str] | str = (),
        allow_credentials: bool = False,
        max_age: int = 600,
        allow_for: Callable[[str], str] | None = None,
    ) -> None:
        origins = {o.strip().rstrip("/").lower() for o in _names(allow_origins)}
        self.any_origin = "*" in origins
        if self.any_origin and allow_credentials:
            raise ValueError(
                "allow_credentials=True cannot be combined with allow_origins=['*']: list the origins "
                "(or, if every origin really may send credentials, say so with allow_origin_regex)"
            )
        self.origins = frozenset(origins - {"*"})
        self.origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        if not (self.any_origin or self.origins or self.origin_regex):
            raise ValueError("add_cors needs allow_origins or allow_origin_regex")
        methods = {m.strip().upper() for m in _names(allow_methods)}
        self.any_method = "*" in methods
        self.methods = frozenset(methods - {"*"})
        headers = {h.strip().lower() for h in _names(allow_headers)}
        self.any_header = "*" in headers
        self.headers = frozenset((headers - {"*"}) | SAFELISTED_HEADERS)
        if max_age < 0:
            raise ValueError("max_age must be >= 0 seconds")
        self.credentials = bool(allow_credentials)
        self.allow_for = allow_for  # path -> its Allow header value, for a plain (non-CORS) OPTIONS
        # The answer depends on the Origin header unless it is always "*".
        self.varies = not self.any_origin
        # Ready-made headers: those for every allowed origin's answer, and a preflight's fixed ones.
        common: list[tuple[str, str]] = []
        if self.credentials:
            common.append(("Access-Control-Allow-Credentials", "true"))
        expose = ", ".join(sorted({h.strip() for h in _names(expose_headers)}))
        self.simple_headers = common + ([("Access-Control-Expose-Headers", expose)] if expose else [])
        fixed = list(common)
        if not self.any_method:
            fixed.append(("Access-Control-Allow-Methods", ", ".join(sorted(self.methods))))
        fixed.append(("Access-Control-Max-Age", str(int(max_age))))
        self.preflight_headers = fixed
        vary = ["Origin"] if self.varies else []
        if self.any_method:
            vary.append("Access-Control-Request-Method")
        vary.append("Access-Control-Request-Headers")  # the allowed ones are echoed
        self.preflight_vary = ", ".join(vary)
        self.route: Any = None  # the preflight Route, set by App.add_cors
        # finish's lines for an allowed origin after Access-Control-Allow-Origin, ready-made for plain();
        # None (plain() defers to finish) if one cannot be sent, so the error is finish's
        try:
            for name, value in self.simple_headers:
                check_header(name, value)
            self.simple_lines: bytes | None = b"".join(
                b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")) for name, value in self.simple_headers)
        except (ValueError, UnicodeEncodeError):
            self.simple_lines = None

    def allows(self, origin: str) -> bool:
        if self.any_origin:
            return True
        origin = origin.lower()
        if origin in self.origins:
            return True
        return self.origin_regex is not None and self.origin_regex.fullmatch(origin) is not None

    def _allow_origin(self, origin: str) -> str:
        return "*" if self.any_origin else origin

    # -- every answer --------------------------------------------------------------------------------
    def finish(self, request: Request, response: Response) -> Response:
        """Add the CORS headers an answer to ``request`` needs (an ``App.finishers`` entry)."""
        origin = request.headers.get("origin")
        if request.route is self.route and origin is not None and "access-control-request-method" in request.headers:
            return response  # a preflight: answered whole by ``preflight``
        if origin is None and not self.varies:
            return response
        headers = response.headers
        if self.varies:
            add_vary(headers, "Origin")
        if origin is None or not self.allows(origin) or "access-control-allow-origin" in headers:
            return response  # no CORS for this origin, or the handler spoke for itself
        headers.add("Access-Control-Allow-Origin", self._allow_origin(origin))
        for name, value in self.simple_headers:
            headers.add(name, value)
        return response

    def plain(self, request: Request, content_type: str, size: int) -> bytes | None:
        """``finish`` for a plain 200 answer (``App.finish_plain``): the same lines, ready-made, with no
        Response; None where ``finish`` must decide (the preflight route, a value it would refuse)."""
        if request.route is self.route:
            return None
        origin = request.headers.get("origin")
        lines = _VARY_ORIGIN if self.varies else b""
        if origin is None or not self.allows(origin):
            return lines
        value = self._allow_origin(origin)
        if self.simple_lines is None:
            return None
        try:
            check_header("Access-Control-Allow-Origin", value)
        except ValueError:
            return None
        return b"%sAccess-Control-Allow-Origin: %s\r\n%s" % (lines, value.encode("latin-1"), self.simple_lines)

    # -- preflights ----------------------------------------------------------------------------------
    async def preflight(self, request: Request, *_: Any, **__: Any) -> Response:
        """Answer ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method`` (204, or 403 with
        no CORS headers); a plain OPTIONS on a path without an OPTIONS route stays a 405."""
        headers = request.headers
        origin = headers.get("origin")
        method = headers.get("access-control-request-method")
        if origin is None or method is None:
            allow = self.allow_for(request.path) if self.allow_for is not None else ""
            raise HTTPError(405, headers={"Allow": allow} if allow else None)
        refused = not self.allows(origin) or not (self.any_method or method.strip().upper() in self.methods)
        requested = list_field(headers, "access-control-request-headers") or ""  # every line of the list
        names = [h.strip().lower() for h in requested.split(",") if h.strip()]
        if not refused and not self.any_header:
            refused = any(name not in self.headers for name in names)
        if refused:
            response = Response(b"CORS preflight refused", 403, None, TEXT_TYPE)
            if self.varies:
                response.headers.add("Vary", "Origin")
            return response
        response = Response(b"", 204, [("Access-Control-Allow-Origin", self._allow_origin(origin))])
        out = response.headers
        for name, value in self.preflight_headers:
            out.add(name, value)
        if self.any_method:
            out.add("Access-Control-Allow-Methods", method.strip())
        if names:  # each one checked above: echo them (Content-Type included, when asked)
            out.add("Access-Control-Allow-Headers", ", ".join(names))
        if self.preflight_vary:
            out.add("Vary", self.preflight_vary)
        return response


def add_vary(headers: MutableHeaders, name: str) -> None:
    """Add ``name`` to the response's Vary unless it is there already (or Vary is ``*``)."""
    wanted = name.lower()
    for value in headers.getall("vary"):
        for token in value.split(","):
            token = token.strip().lower()
            if token == wanted or token == "*":
                return
    headers.add("Vary", name)


def _names(value: Iterable[str] | str) -> list[str]:
    """A list of names; a lone string is one name (``allow_origins="https://a.example"``)."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


__all__ = ["Cors", "DEFAULT_METHODS", "SAFELISTED_HEADERS", "add_vary"]
