"""The ASGI ceiling: the least an httptools + uvloop server can do to run an ASGI app, and no more.

``python -m benchmarks.servers.bare_asgi module:app --port P``

Per request: the head is parsed, a scope built, the app run in a task of its own (an ASGI app may
wait), ``receive()`` returns the whole body and ``send()`` writes the head and body at once. No
limits, no timeouts, no Date or Server header, no header checks, no streaming, no pipelining order,
no disconnect: nothing a production server must do. Not a server to use; a bound to measure against
(``benchmarks/asgi_instructions.py``): the gap from uvicorn or aioserve to it is what their work
costs, and the app's own cost (``--servers alone``) is what no server removes.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import signal

import httptools
import uvloop

_REASONS = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed", 500: b"Internal Server Error"}


class BareASGIProtocol(asyncio.Protocol):
    def __init__(self, app, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.peer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path, _, query = self.url.partition(b"?")
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": self.parser.get_method().decode(), "scheme": "http", "path": path.decode("latin-1"),
            "raw_path": path, "query_string": query, "root_path": "", "headers": self.headers,
            "client": self.peer, "server": None,
        }
        body = b"".join(self.body)
        keep_alive = self.parser.should_keep_alive()
        self.loop.create_task(self.run(scope, body, keep_alive))

    async def run(self, scope, body: bytes, keep_alive: bool) -> None:
        head: list[bytes] = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status = message["status"]
                head.append(b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")))
                head.extend(b"%s: %s\r\n" % pair for pair in message.get("headers", ()))
            else:
                head.append(b"\r\n")
                head.append(message.get("body", b""))
                self.transport.write(b"".join(head))
                if not keep_alive:
                    self.transport.close()

        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    module, _, attr = args.target.partition(":")
    app = getattr(importlib.import_module(module), attr)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: BareASGIProtocol(app, loop), args.host, args.port)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
