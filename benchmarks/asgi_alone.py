"""An ASGI app driven with no server at all: the app's own share of an ASGI request.

    python -m benchmarks.asgi_alone TARGET PATH N

Used by ``benchmarks.asgi_instructions --servers alone``: the same app and requests as the servers get,
but called directly (``await app(scope, receive, send)`` N times in one task, on uvloop), with a scope as
an HTTP/1.1 server would build it, a ``receive`` that returns an empty body and a ``send`` that does
nothing. What a server spends per request is its count minus this one.
"""
from __future__ import annotations

import asyncio
import importlib
import sys

import uvloop

_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict:
    return _REQUEST


async def _send(message: dict) -> None:
    return None


def scope_for(path: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
    }


async def drive(app, path: str, n: int) -> None:
    template = scope_for(path)
    for _ in range(n):
        scope = dict(template)
        scope["state"] = {}
        await app(scope, _receive, _send)


def main() -> None:
    target, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr)
    uvloop.run(drive(app, path, n))


if __name__ == "__main__":
    main()
