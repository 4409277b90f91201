"""The ceiling: a bare httptools + uvloop protocol with no framework at all.

``python -m benchmarks.servers.bare --port P``

Every response is a precomputed constant, except the two that must depend on the request:
/users/{id} and /r{i}/{id}/x put the id in a small JSON body, and /echo sends the request body back.
Keep-alive and pipelining are handled (the responses to one ``data_received`` call are joined into
one write); there is no Date header, no routing table, no request object, no flow control.
Anything a real framework does costs more than this; the gap to it is the framework's overhead.
"""
from __future__ import annotations

import argparse
import asyncio
import signal

import httptools

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def _resp(status: bytes, ctype: bytes, body: bytes) -> bytes:
    return b"".join((b"HTTP/1.1 ", status, b"\r\nContent-Type: ", ctype,
                     b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))


PLAIN = _resp(b"200 OK", b"text/plain; charset=utf-8", b"Hello, World!")
JSON = _resp(b"200 OK", b"application/json", b'{"message":"Hello, World!"}')
NOT_FOUND = _resp(b"404 Not Found", b"text/plain", b"Not Found")
STATIC = {(b"GET", b"/plaintext"): PLAIN, (b"GET", b"/json"): JSON}
ECHO_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "


class BareProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "body", "out")

    def __init__(self) -> None:
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.out: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_resp(b"400 Bad Request", b"text/plain", b"Bad Request"))
            self.transport.close()
            return
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out.clear()
            if not self.parser.should_keep_alive():
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body.clear()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        resp = STATIC.get((method, path))
        if resp is None:
            resp = self._dynamic(method, path)
        self.out.append(resp)

    def _dynamic(self, method: bytes, path: bytes) -> bytes:
        if method == b"POST" and path == b"/echo":
            body = b"".join(self.body)
            return b"".join((ECHO_HEAD, str(len(body)).encode(), b"\r\n\r\n", body))
        if method == b"GET":
            parts = path.split(b"/")
            if len(parts) == 3 and parts[1] == b"users" and parts[2].isdigit():
                return _resp(b"200 OK", b"application/json", b'{"id":%d}' % int(parts[2]))
            if (len(parts) == 4 and parts[3] == b"x" and parts[1][:1] == b"r"
                    and parts[1][1:].isdigit() and parts[2].isdigit()):
                return _resp(b"200 OK", b"application/json",
                             b'{"route":%d,"id":%d}' % (int(parts[1][1:]), int(parts[2])))
        return NOT_FOUND


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BareProtocol, host, port, backlog=4096)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(f"Listening on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    a = p.parse_args()
    if a.loop == "uvloop" and uvloop is not None:
        uvloop.run(main(a.host, a.port))
    else:
        asyncio.run(main(a.host, a.port))
