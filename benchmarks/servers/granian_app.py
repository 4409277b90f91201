"""Granian benchmark app in Granian's native RSGI interface.

Granian is a server, not a framework: it has no router. The idiomatic RSGI app dispatches by hand,
so this file does exactly that (a dict for static paths, a split for the parameterised ones).
That makes it closer to a "server ceiling" than the framework peers; the README says so.
Launched as ``granian --interface rsgi benchmarks.servers.granian_app:app``.
"""
from __future__ import annotations

import orjson

from .payload import EXTRA_ROUTES, JSON_OBJ

_TEXT = [("content-type", "text/plain; charset=utf-8")]
_JSON = [("content-type", "application/json")]
_NF = [("content-type", "text/plain")]


async def _plaintext(scope, proto):
    proto.response_bytes(200, _TEXT, b"Hello, World!")


async def _json(scope, proto):
    proto.response_bytes(200, _JSON, orjson.dumps(JSON_OBJ))


async def _echo(scope, proto):
    body = await proto()
    proto.response_bytes(200, _JSON, body)


_STATIC = {("GET", "/plaintext"): _plaintext, ("GET", "/json"): _json, ("POST", "/echo"): _echo}
_EXTRA = {f"r{i}": i for i in range(EXTRA_ROUTES)}


async def app(scope, proto):
    if scope.proto != "http":
        return
    method, path = scope.method, scope.path
    h = _STATIC.get((method, path))
    if h is not None:
        await h(scope, proto)
        return
    if method == "GET":
        parts = path.split("/")
        n = len(parts)
        if n == 3 and parts[1] == "users" and parts[2].isdigit():
            proto.response_bytes(200, _JSON, orjson.dumps({"id": int(parts[2])}))
            return
        if n == 4 and parts[3] == "x" and parts[2].isdigit():
            i = _EXTRA.get(parts[1])
            if i is not None:
                proto.response_bytes(200, _JSON, orjson.dumps({"route": i, "id": int(parts[2])}))
                return
    proto.response_bytes(404, _NF, b"Not Found")
