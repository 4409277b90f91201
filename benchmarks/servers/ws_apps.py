"""WebSocket echo servers for ``benchmarks/websocket.py``: ``python -m benchmarks.servers.ws_apps <name> --port P``.

Each serves ``/ws`` (echo every message, text as text) and ``GET /plaintext`` (the harness's readiness
probe), one process, no access log, on uvloop where the server lets us choose, each in its own idiom.
aioserve and uvicorn + Starlette are launched through their CLIs (module-level ``aioserve_app`` /
``starlette_app``); the others through ``main()``.
"""
from __future__ import annotations

import argparse
import sys


def _aioserve():
    from aioserve import App, WebSocket

    app = App()

    @app.get("/plaintext")
    async def plaintext(request):
        return "Hello, World!"

    @app.websocket("/ws")
    async def ws_echo(ws: WebSocket):
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    return app


def _starlette():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    async def plaintext(request):
        return PlainTextResponse("Hello, World!")

    async def ws_echo(ws):
        await ws.accept()
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await ws.send_text(message["text"])
                else:
                    await ws.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[Route("/plaintext", plaintext), WebSocketRoute("/ws", ws_echo)])


def __getattr__(name: str):  # build only the app asked for, so a missing peer breaks nothing else
    if name == "aioserve_app":
        return _aioserve()
    if name == "starlette_app":
        return _starlette()
    raise AttributeError(name)


def run_aiohttp(host: str, port: int) -> None:
    import uvloop
    from aiohttp import WSMsgType, web

    async def plaintext(request):
        return web.Response(text="Hello, World!")

    async def ws_echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/plaintext", plaintext)
    app.router.add_get("/ws", ws_echo)
    uvloop.install()
    web.run_app(app, host=host, port=port, access_log=None, print=None)


def run_sanic(host: str, port: int) -> None:
    from sanic import Sanic
    from sanic.response import text

    app = Sanic("wsbench")
    app.config.WEBSOCKET_PING_INTERVAL = 20
    app.config.KEEP_ALIVE_TIMEOUT = 120

    @app.get("/plaintext")
    async def plaintext(request):
        return text("Hello, World!")

    @app.websocket("/ws")
    async def ws_echo(request, ws):
        async for message in ws:
            await ws.send(message)

    app.run(host=host, port=port, single_process=True, access_log=False, debug=False, motd=False)


def run_socketify(host: str, port: int) -> None:
    from socketify import App, AppListenOptions, CompressOptions, OpCode

    app = App()
    app.get("/plaintext", lambda res, req: res.send(b"Hello, World!", content_type=b"text/plain"))
    app.ws("/ws", {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 1024 * 1024,
        "idle_timeout": 120,
        "message": lambda ws, message, opcode: ws.send(message, opcode),
    })
    app.listen(AppListenOptions(port=port, host=host), lambda config: None)
    app.run()


def bare_ws_protocol():
    """The ceiling with websockets as the framer: an asyncio protocol around websockets' sans-IO
    ``ServerProtocol`` that echoes each frame as it is parsed, in ``data_received``: no task, no
    handler, no queue, no limits beyond websockets' own, no pings. Each text message is decoded
    (RFC 6455 8.1: invalid UTF-8 fails the connection) and encoded again, as any real echo must.
    Not a server to use: what no server on websockets' parser can beat. Returns the protocol class
    (``run_bare_ws`` serves it on uvloop; ``benchmarks/ws_loopback.py --server bare`` counts it)."""
    import asyncio

    from websockets.frames import Opcode
    from websockets.http11 import Request as WsRequest
    from websockets.server import ServerProtocol

    plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!"

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.ws = ServerProtocol(max_size=1 << 20)
            self.open = False

        def data_received(self, data):
            if not self.open and data.startswith(b"GET /plaintext"):
                self.transport.write(plain)
                self.transport.close()
                return
            ws = self.ws
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, WsRequest):
                    ws.send_response(ws.accept(event))
                    self.open = True
                elif event.opcode is Opcode.TEXT:
                    ws.send_text(event.data.decode().encode())
                elif event.opcode is Opcode.BINARY:
                    ws.send_binary(event.data)
            out = ws.data_to_send()
            if out:
                self.transport.writelines(out)
            if ws.close_expected():
                self.transport.close()

    return Echo


def run_bare_ws(host: str, port: int) -> None:
    """``bare_ws_protocol()`` served on uvloop: the bare-websockets ceiling."""
    import asyncio

    import uvloop

    echo = bare_ws_protocol()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(echo, host, port)
        await server.serve_forever()

    uvloop.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=["aiohttp", "sanic", "socketify", "bare"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    {"aiohttp": run_aiohttp, "sanic": run_sanic, "socketify": run_socketify, "bare": run_bare_ws}[args.server](args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
