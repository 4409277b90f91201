"""The access log of a WebSocket: a line at the handshake (101, or the refusal's status) and one at
the close, with the close code and how long the socket was open."""
from __future__ import annotations

import asyncio
import logging
import re
from time import perf_counter

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from aioserve import App, WebSocket
from aioserve import accesslog
from aioserve.accesslog import AccessLog
from aioserve.logconfig import LOG_FORMAT
from aioserve.request import Request
from tests.support import capture_logs, running, wait_until

app = App()


@app.websocket("/echo")
async def echo(ws: WebSocket):
    await ws.accept()
    async for message in ws:
        await ws.send(message)


@app.websocket("/refuse")
async def refuse(ws: WebSocket):
    await ws.close()


@app.websocket("/quiet", access_log=False)
async def quiet(ws: WebSocket):
    await ws.accept()
    await ws.close(4001)


def url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def access_records(logs) -> list[logging.LogRecord]:
    return logs.by_logger("aioserve.access")


async def test_a_line_at_the_handshake_and_one_at_the_close_with_code_and_duration():
    with capture_logs() as logs:
        async with running(app, access_log=True, ws_ping_interval=None) as server:
            async with connect(url(server, "/echo")) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                await wait_until(lambda: len(access_records(logs)) == 1)
                opened = perf_counter()
                await asyncio.sleep(0.05)  # wall time must pass: it is the duration we check
            await wait_until(lambda: len(access_records(logs)) == 2)
            held_ms = (perf_counter() - opened) * 1000
    handshake, close = access_records(logs)
    assert (handshake.method, handshake.path, handshake.status) == ("GET", "/echo", 101)
    assert re.search(r'"GET /echo HTTP/1\.1" 101 0 \d+\.\d\dms$', handshake.getMessage())
    assert (close.method, close.path, close.status, close.close_code) == ("WEBSOCKET", "/echo", 1000, 1000)
    assert close.duration_ms >= 50 and close.duration_ms <= held_ms + 1000
    assert re.search(r'"WEBSOCKET /echo" 1000 - \d+\.\d\dms$', close.getMessage())


async def test_a_refused_handshake_gets_one_line_with_its_status():
    with capture_logs() as logs:
        async with running(app, access_log=True, ws_ping_interval=None) as server:
            with pytest.raises(InvalidStatus) as refused:
                await connect(url(server, "/refuse"))
            assert refused.value.response.status_code == 403
            await wait_until(lambda: server.connections == 0)
            await wait_until(lambda: len(access_records(logs)) >= 1)
    (line,) = access_records(logs)
    assert (line.path, line.status) == ("/refuse", 403)


async def test_a_route_with_access_log_off_writes_no_line():
    with capture_logs() as logs:
        async with running(app, access_log=True, ws_ping_interval=None) as server:
            async with connect(url(server, "/quiet")) as ws:
                await ws.wait_closed()
            assert ws.close_code == 4001
            await wait_until(lambda: server.connections == 0)
            async with connect(url(server, "/echo")):
                pass
            await wait_until(lambda: len(access_records(logs)) == 2)  # /echo's two lines only
    assert {r.path for r in access_records(logs)} == {"/echo"}


def test_the_direct_close_line_is_what_the_default_handler_would_write(monkeypatch):
    fixed = 1_790_000_000.25

    class Sink:
        def write(self, text: str) -> None: ...

        def flush(self) -> None: ...

    monkeypatch.setattr(accesslog, "wall_clock", lambda: fixed)
    loop = asyncio.new_event_loop()
    try:
        log = AccessLog(loop)
        log.handler = logging.StreamHandler(Sink())
        monkeypatch.setattr(accesslog, "default_handler_only", lambda: log.handler)
        monkeypatch.setattr(logging.getLogger("aioserve.access"), "isEnabledFor", lambda level: True)
        req = Request(None, "GET", b"/ws/a%20b", b"", "/ws/a b", [], "1.1", True, ("10.0.0.7", 5555))
        log.log_websocket_close(req, 1001, perf_counter())
        line = log.lines[0]
    finally:
        loop.close()
    duration = re.search(r" (\d+\.\d\dms)\n$", line).group(1)
    record = logging.LogRecord("aioserve.access", logging.INFO, __file__, 1, '%s - "WEBSOCKET %s" %d - %s',
                               ("10.0.0.7:5555", "/ws/a%20b", 1001, duration), None)
    record.created = fixed
    record.msecs = 250.0
    assert line == logging.Formatter(LOG_FORMAT).format(record) + "\n"
