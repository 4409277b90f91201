"""WebSocket: handshake, messages, limits, keep-alive, closing and protocol violations.

Three independent clients: the ``websockets`` client, ``wsproto`` over a raw socket, and a raw-frame
client (below) that builds frames by hand, only here, to send what a correct client never would. The
violation cases mirror the Autobahn|Testsuite categories (framing, ping/pong, reserved bits, opcodes,
fragmentation, UTF-8, close codes, permessage-deflate).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct

import pytest
import wsproto
import wsproto.events as wse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support import HOST, READ_TIMEOUT, capture_logs, raw_connection, running, upgraded_session, wait_until

import aioserve
from aioserve import App, HTTPError, WebSocket, WebSocketDisconnect

# -- the app under test ---------------------------------------------------------------------------------

app = App()
seen: dict[str, object] = {}
release = {"event": None}


@app.websocket("/echo")
async def echo(ws: WebSocket):
    await ws.accept()
    async for message in ws:
        await ws.send(message)


@app.websocket("/rooms/{room}/{n:int}")
async def room(ws: WebSocket, room: str, n: int):
    await ws.accept(headers={"X-Room": room})
    await ws.send_json({
        "room": room, "n": n, "params": ws.path_params, "q": ws.query.get("q"), "h": ws.headers.get("x-h"),
        "cookie": ws.cookies.get("c"), "client": list(ws.client), "offered": ws.subprotocols,
    })
    await ws.close()


@app.websocket("/subprotocol")
async def subprotocol(ws: WebSocket):
    offered = ws.subprotocols
    try:
        await ws.accept(subprotocol="not-offered")
    except ValueError:
        seen["value_error"] = True
    await ws.accept(subprotocol=offered[-1] if offered else None)
    await ws.send(ws.subprotocols[-1] if offered else "-")


@app.websocket("/refuse")
async def refuse(ws: WebSocket):
    await ws.close()


@app.websocket("/unauthorised")
async def unauthorised(ws: WebSocket):
    raise HTTPError(401, "who are you?")


@app.websocket("/boom")
async def boom(ws: WebSocket):
    await ws.accept()
    await ws.receive()
    raise RuntimeError("handler failed")


@app.websocket("/json")
async def json_echo(ws: WebSocket):
    await ws.accept()
    obj = await ws.receive_json()
    await ws.send_json({"got": obj})
    await ws.send(await ws.receive_bytes())
    await ws.send(await ws.receive_text())


@app.websocket("/record")
async def record(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            await ws.receive()
    except WebSocketDisconnect as exc:
        seen["disconnect"] = (exc.code, exc.reason, ws.close_code)
        try:
            await ws.receive()
        except WebSocketDisconnect as again:
            seen["again"] = again.code
    finally:
        seen["done"].set()  # type: ignore[attr-defined]


@app.websocket("/escape")
async def escape(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            await ws.receive()  # WebSocketDisconnect escapes: a normal end
    finally:
        seen["done"].set()  # type: ignore[attr-defined]


@app.websocket("/server-close")
async def server_close(ws: WebSocket):
    await ws.accept()
    await ws.receive()
    await ws.close(4000, "bye")


@app.websocket("/returns")
async def returns(ws: WebSocket):
    await ws.accept()
    await ws.send("only this")


@app.websocket("/lazy")
async def lazy(ws: WebSocket):
    """Reads nothing until told to: the inbox fills and reading must pause."""
    await ws.accept()
    await release["event"].wait()  # type: ignore[union-attr]
    count = 0
    async for _ in ws:
        count += 1
        if count == seen["expect"]:
            await ws.send(str(count))


FLOOD = 160  # 10 MiB: more than loopback's socket buffers hold


@app.websocket("/flood")
async def flood(ws: WebSocket):
    """Sends more than a client that does not read can hold: send() must wait."""
    await ws.accept()
    seen["sent"] = 0
    for _ in range(FLOOD):
        await ws.send(b"x" * 65536)
        seen["sent"] += 1  # type: ignore[operator]
    await ws.close()


@app.websocket("/hang")
async def hang(ws: WebSocket):
    await ws.accept()
    try:
        await asyncio.Event().wait()
    finally:
        seen["hang_done"] = True


@app.get("/plain")
async def plain(request):
    return "plain"


@app.websocket("/slow-accept")
async def slow_accept(ws: WebSocket):
    """Accepts once the test says so (think of an auth lookup), then records what it reads."""
    await seen["go"].wait()  # type: ignore[attr-defined]
    try:
        await ws.accept()
        got = seen["got"] = []
        async for message in ws:
            got.append(message)
        seen["end"] = (ws.close_code, ws._session.close_info()[1])
    except WebSocketDisconnect as exc:
        seen["accept_raised"] = exc.code
        raise  # a handler may let it escape: a normal end
    finally:
        seen["done"].set()  # type: ignore[attr-defined]


BAD_CLOSES = [(1005, ""), (1006, ""), (999, ""), (0, ""), (1004, ""), (1015, ""), (1016, ""), (2999, ""),
              (5000, ""), (True, ""), (1000.0, ""), (1000, "r" * 124), (4000, "é" * 62)]  # 124 bytes of UTF-8


@app.websocket("/close-args")
async def close_args(ws: WebSocket):
    """close() with what RFC 6455 forbids sending: a ValueError each, and the socket stays usable."""
    errors = seen["close_errors"] = []
    await ws.accept()
    for code, reason in BAD_CLOSES:
        try:
            await ws.close(code, reason)
        except ValueError as exc:
            errors.append(str(exc))
    await ws.send("still open")
    await ws.close(3000, "é" * 61 + "r")  # 123 bytes: the longest reason a close frame holds


@app.websocket("/refuse-with/{n:int}")
async def refuse_with(ws: WebSocket, n: int):
    """close() before accept with what a close frame could not carry: none is sent, so a 403 refusal."""
    code, reason = BAD_CLOSES[n]
    await ws.close(code, reason)
    seen["refused"] = True


# -- a raw-frame client -----------------------------------------------------------------------------------

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(path: str = "/echo", version: str = "13", extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n").encode()


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


async def read_frame(conn) -> tuple[int, bool, bytes]:
    b0, b1 = await conn.read_exactly(2)
    n = b1 & 0x7F
    assert not b1 & 0x80, "a server frame must not be masked"
    if n == 126:
        n = struct.unpack("!H", await conn.read_exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await conn.read_exactly(8))[0]
    payload = await conn.read_exactly(n) if n else b""
    return b0 & 0x0F, bool(b0 & 0x80), payload


async def open_raw(server, path: str = "/echo", rcvbuf: int | None = None):
    ctx = raw_connection(server, rcvbuf=rcvbuf)
    conn = await ctx.__aenter__()
    await conn.send(handshake(path))
    response = await conn.read_response()
    assert response.status == 101, response
    return ctx, conn


async def expect_close(conn, code: int) -> None:
    """The server's close frame carries ``code``, then it closes the TCP connection."""
    for _ in range(10):
        opcode, _, payload = await read_frame(conn)
        if opcode == CLOSE:
            break
    else:
        raise AssertionError("no close frame")
    assert struct.unpack("!H", payload[:2])[0] == code, payload
    assert await conn.is_closed_by_peer()


def url(server, path: str = "/echo") -> str:
    return f"ws://{HOST}:{server.port}{path}"


@pytest.fixture
async def server():
    seen.clear()
    seen["done"] = asyncio.Event()
    async with running(app, ws_ping_interval=None) as srv:
        yield srv


# -- handshake ---------------------------------------------------------------------------------------------

async def test_echo_text_and_binary_with_the_websockets_client(server):
    async with connect(url(server)) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
    assert ws.close_code == 1000


async def test_echo_with_wsproto_as_a_second_client(server):
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    async with raw_connection(server) as conn:
        await conn.send(client.send(wse.Request(host="x", target="/echo")))
        events: list = []
        for _ in range(20):
            client.receive_data(await conn.read_some())
            events += list(client.events())
            if any(isinstance(e, wse.AcceptConnection) for e in events):
                break
        assert any(isinstance(e, wse.AcceptConnection) for e in events)
        await conn.send(client.send(wse.Message(data="via wsproto")) + client.send(wse.Message(data=b"bin")))
        got: list = []
        for _ in range(20):
            client.receive_data(await conn.read_some())
            got += [e.data for e in client.events() if isinstance(e, wse.Message)]
            if len(got) == 2:
                break
        assert got == ["via wsproto", b"bin"]
        await conn.send(client.send(wse.CloseConnection(code=1000)))
        for _ in range(20):
            data = await conn.read_some()
            client.receive_data(data or None)
            closes = [e for e in client.events() if isinstance(e, wse.CloseConnection)]
            if closes:
                assert closes[0].code == 1000
                break
        else:
            raise AssertionError("no close answer")


async def test_path_params_query_headers_cookies_client_and_extra_headers(server):
    async with connect(url(server, "/rooms/blue/7?q=1"), additional_headers={"X-H": "v", "Cookie": "c=k"},
                       subprotocols=["a", "b"]) as ws:
        # The client refuses a handshake that picks no subprotocol? No: none chosen is allowed.
        assert ws.response.headers["X-Room"] == "blue"
        data = await ws.recv()
    import json
    got = json.loads(data)
    assert got == {"room": "blue", "n": 7, "params": {"room": "blue", "n": 7}, "q": "1", "h": "v",
                   "cookie": "k", "client": got["client"], "offered": ["a", "b"]}
    assert got["client"][0] == "127.0.0.1"


async def test_subprotocol_must_be_offered_and_is_answered(server):
    async with connect(url(server, "/subprotocol"), subprotocols=["chat", "superchat"]) as ws:
        assert ws.subprotocol == "superchat"
        assert await ws.recv() == "superchat"
    assert seen["value_error"] is True


async def test_close_before_accept_is_403(server):
    async with raw_connection(server) as conn:
        await conn.send(handshake("/refuse"))
        response = await conn.read_response()
        assert response.status == 403
        assert await conn.is_closed_by_peer()


@pytest.mark.parametrize("n", [1, 5, 7, 11], ids=["1006", "1015", "2999", "reason-124-bytes"])
async def test_close_before_accept_is_403_whatever_the_code(server, n):
    """No close frame is sent before accept: the code and reason never reach the wire, so nothing in
    them can be refused (an ASGI app's websocket.close before accept is a 403 whatever its code)."""
    with capture_logs() as logs:
        async with raw_connection(server) as conn:
            await conn.send(handshake(f"/refuse-with/{n}"))
            response = await conn.read_response()
            assert response.status == 403
            assert await conn.is_closed_by_peer()
    assert seen["refused"] is True
    assert not logs.at_least(logging.ERROR), logs.describe()


async def test_every_handshake_answer_carries_date_and_server(server):
    """API.md: every response carries Date and Server; the handshake's answers are responses too."""
    for request, status in ((handshake(), 101), (handshake("/refuse"), 403), (handshake(version="8"), 426),
                            (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Version: 13\r\n\r\n", 400)):
        async with raw_connection(server) as conn:
            await conn.send(request)
            response = await conn.read_response()
            assert response.status == status
            assert response.header("server") == "aioserve" and response.has("date"), response.headers


async def test_http_error_before_accept_answers_its_status(server):
    async with raw_connection(server) as conn:
        await conn.send(handshake("/unauthorised"))
        response = await conn.read_response()
        assert response.status == 401 and b"who are you?" in response.body


async def test_bad_version_is_426_naming_13(server):
    async with raw_connection(server) as conn:
        await conn.send(handshake(version="8"))
        response = await conn.read_response()
        assert response.status == 426
        assert response.header("sec-websocket-version") == "13"


async def test_missing_key_is_400(server):
    async with raw_connection(server) as conn:
        await conn.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n")
        response = await conn.read_response()
        assert response.status == 400


async def test_a_head_websockets_cannot_parse_still_gets_a_400(server):
    """The HTTP parser takes ``Content-Length: 00`` (no body); websockets' handshake parser refuses it
    and, on such a failure, only ends the stream: the server must still answer before it closes."""
    async with raw_connection(server) as conn:
        await conn.send(handshake(extra="Content-Length: 00\r\n"))
        response = await conn.read_response()
        assert response.status == 400 and response.header("connection") == "close"
        assert await conn.is_closed_by_peer()


async def test_a_header_line_too_long_for_websockets_is_431(server):
    async with raw_connection(server) as conn:
        await conn.send(handshake(extra="Cookie: " + "c" * 9000 + "\r\n"))
        response = await conn.read_response()
        assert response.status == 431
        assert await conn.is_closed_by_peer()


async def test_plain_get_on_a_websocket_route_is_426(server):
    async with raw_connection(server) as conn:
        await conn.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.read_response()
        assert response.status == 426
        assert response.header("upgrade") == "websocket"


async def test_upgrade_on_an_http_route_is_400_and_closed(server):
    async with raw_connection(server) as conn:
        await conn.send(handshake("/plain"))
        response = await conn.read_response()
        assert response.status == 400
        assert await conn.is_closed_by_peer()


async def test_upgrade_header_without_connection_upgrade_is_plain_http(server):
    async with raw_connection(server) as conn:
        await conn.send(f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        response = await conn.read_response()
        assert response.status == 426 and response.header("upgrade") == "websocket"
        await conn.send(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")  # still an HTTP connection
        assert (await conn.read_response()).body == b"plain"


async def test_frames_sent_with_the_handshake_are_kept(server):
    async with raw_connection(server) as conn:
        await conn.send(handshake() + frame(TEXT, b"early"))
        assert (await conn.read_response()).status == 101
        assert await read_frame(conn) == (TEXT, True, b"early")


@pytest.mark.parametrize("leave", ["fin", "reset"])
async def test_a_client_gone_before_accept_makes_accept_raise_disconnect_1006(server, leave):
    seen["go"] = asyncio.Event()
    with capture_logs() as logs:
        async with raw_connection(server) as conn:
            await conn.send(handshake("/slow-accept"))
            await wait_until(lambda: upgraded_session(server) is not None)
            session = upgraded_session(server)
            if leave == "reset":
                conn.reset()
            else:
                await conn.close()
        await wait_until(lambda: session.lost)
        seen["go"].set()  # type: ignore[attr-defined]
        await asyncio.wait_for(seen["done"].wait(), READ_TIMEOUT)  # type: ignore[union-attr]
        await asyncio.sleep(0)  # the handler's task ends after its finally: let the server see it end
    assert seen["accept_raised"] == 1006
    assert not logs.at_least(logging.ERROR), logs.describe()


async def test_a_client_that_half_closes_before_accept_is_read_and_answered(server):
    """Handshake, two messages and a close frame, then FIN (shutdown SHUT_WR), all before the handler
    accepts: on accept() the messages are delivered and the close is answered, then the TCP close."""
    seen["go"] = asyncio.Event()
    async with raw_connection(server) as conn:
        await conn.send(handshake("/slow-accept") + frame(TEXT, b"early") + frame(BINARY, b"\x01")
                        + frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
        conn.writer.write_eof()
        await wait_until(lambda: upgraded_session(server) is not None)
        session = upgraded_session(server)
        await wait_until(lambda: session.lost or session.peer_eof)  # the server has seen the FIN
        seen["go"].set()  # type: ignore[attr-defined]
        assert (await conn.read_response()).status == 101
        opcode, _, payload = await read_frame(conn)
        assert (opcode, payload) == (CLOSE, struct.pack("!H", 1000) + b"bye")
        assert await conn.is_closed_by_peer()
    await asyncio.wait_for(seen["done"].wait(), READ_TIMEOUT)  # type: ignore[union-attr]
    assert seen["got"] == ["early", b"\x01"] and seen["end"] == (1000, "bye")


# -- messages and closing ------------------------------------------------------------------------------------

async def test_json_text_and_bytes_helpers(server):
    async with connect(url(server, "/json")) as ws:
        await ws.send('{"a": [1, 2]}')
        assert await ws.recv() == '{"got":{"a":[1,2]}}'
        await ws.send(b"raw")
        assert await ws.recv() == b"raw"
        await ws.send("txt")
        assert await ws.recv() == "txt"


async def test_receive_after_close_raises_disconnect_with_code_and_reason(server):
    async with connect(url(server, "/record")) as ws:
        await ws.close(4001, "going")
    await asyncio.wait_for(seen["done"].wait(), READ_TIMEOUT)  # type: ignore[union-attr]
    assert seen["disconnect"] == (4001, "going", 4001)
    assert seen["again"] == 4001


async def test_a_handler_letting_disconnect_escape_ends_quietly(server):
    with capture_logs() as logs:
        async with connect(url(server, "/escape")) as ws:
            await ws.send("x")
        await asyncio.wait_for(seen["done"].wait(), READ_TIMEOUT)  # type: ignore[union-attr]
        await asyncio.sleep(0)
    assert not logs.at_least(logging.ERROR), logs.describe()


async def test_handler_exception_closes_1011_and_logs_once(server):
    with capture_logs() as logs:
        async with connect(url(server, "/boom")) as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1011
    errors = [r for r in logs.at_least(logging.ERROR) if r.exc_info]
    assert len(errors) == 1 and "handler failed" in str(errors[0].exc_info[1])


async def test_server_close_code_and_reason_reach_the_client(server):
    async with connect(url(server, "/server-close")) as ws:
        await ws.send("x")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert (ws.close_code, ws.close_reason) == (4000, "bye")


async def test_close_with_a_code_or_reason_that_cannot_be_sent_raises_value_error(server):
    ctx, conn = await open_raw(server, "/close-args")
    assert await read_frame(conn) == (TEXT, True, b"still open")
    opcode, _, payload = await read_frame(conn)
    assert (opcode, payload) == (CLOSE, struct.pack("!H", 3000) + ("é" * 61 + "r").encode())
    errors = seen["close_errors"]
    assert len(errors) == len(BAD_CLOSES), errors
    assert "1005" in errors[0] and "124 bytes" in errors[-2] and "124 bytes" in errors[-1], errors
    await ctx.__aexit__(None, None, None)


async def test_a_handler_that_returns_closes_1000(server):
    async with connect(url(server, "/returns")) as ws:
        assert await ws.recv() == "only this"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1000


async def test_async_for_ends_on_an_abrupt_disconnect(server):
    ctx, conn = await open_raw(server, "/record")
    conn.reset()
    await asyncio.wait_for(seen["done"].wait(), READ_TIMEOUT)  # type: ignore[union-attr]
    assert seen["disconnect"][0] == 1006  # type: ignore[index]
    await ctx.__aexit__(None, None, None)


async def test_peer_that_never_answers_our_close_is_cut():
    seen.clear()
    async with running(app, ws_ping_interval=None, ws_ping_timeout=0.3) as srv:
        ctx, conn = await open_raw(srv, "/server-close")
        await conn.send(frame(TEXT, b"x"))
        opcode, _, payload = await read_frame(conn)
        assert opcode == CLOSE and payload[:2] == struct.pack("!H", 4000)
        # We never answer the close: the server must drop us on its own, within the timeout.
        assert await conn.is_closed_by_peer(timeout=3)
        await ctx.__aexit__(None, None, None)


async def test_graceful_shutdown_closes_open_websockets_with_1001():
    seen.clear()
    srv = await aioserve.serve(app, host=HOST, port=0, access_log=False, ws_ping_interval=None)
    try:
        async with connect(url(srv, "/echo")) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            shutdown = asyncio.ensure_future(srv.shutdown(timeout=5))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), READ_TIMEOUT)
            assert ws.close_code == 1001
            await asyncio.wait_for(shutdown, READ_TIMEOUT)
        assert srv.connections == 0
    finally:
        await srv.shutdown(timeout=1)


async def test_shutdown_cancels_a_handler_stuck_elsewhere():
    seen.clear()
    srv = await aioserve.serve(app, host=HOST, port=0, access_log=False, ws_ping_interval=None)
    ctx, conn = await open_raw(srv, "/hang")
    # The raw client never answers the 1001 close: the graceful timeout ends it and the handler.
    await asyncio.wait_for(srv.shutdown(timeout=0.3), READ_TIMEOUT)
    await wait_until(lambda: seen.get("hang_done") is True)
    await ctx.__aexit__(None, None, None)


async def test_limit_connections_counts_websockets():
    async with running(app, ws_ping_interval=None, limit_connections=1) as srv:
        async with connect(url(srv)) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            async with raw_connection(srv) as other:
                await other.send(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await other.read_response()).status == 503
        await wait_until(lambda: srv.connections == 0)


# -- limits and backpressure -----------------------------------------------------------------------------------

async def test_max_size_exactly_passes_and_one_byte_more_closes_1009():
    async with running(app, ws_ping_interval=None, ws_max_size=1000, ws_per_message_deflate=False) as srv:
        async with connect(url(srv), max_size=None, compression=None) as ws:
            await ws.send("a" * 1000)
            assert await ws.recv() == "a" * 1000
            await ws.send("a" * 1001)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1009


async def test_fragmented_message_over_max_size_closes_1009():
    async with running(app, ws_ping_interval=None, ws_max_size=1000) as srv:
        ctx, conn = await open_raw(srv)
        await conn.send(frame(BINARY, b"a" * 600, fin=False) + frame(CONT, b"a" * 401))
        await expect_close(conn, 1009)
        await ctx.__aexit__(None, None, None)


async def test_a_handler_that_does_not_read_pauses_reading(server):
    release["event"] = asyncio.Event()
    seen["expect"] = 200
    async with connect(url(server, "/lazy"), compression=None) as ws:
        async def send_all():
            for _ in range(200):
                await ws.send(b"y" * 65536)

        sender = asyncio.ensure_future(send_all())

        def lazy_sessions() -> list:  # this test's (a socket of an earlier test may still be closing)
            return [c.upgraded for c in server.state.connections
                    if c.upgraded is not None and c.upgraded.request.path == "/lazy"]

        await wait_until(lambda: any(s.read_paused for s in lazy_sessions()), timeout=5)
        session = next(s for s in lazy_sessions() if s.read_paused)
        assert len(session.inbox) <= 16
        assert not sender.done()  # TCP pushes back on the client: memory stays bounded here
        release["event"].set()
        await asyncio.wait_for(sender, 15)
        assert await asyncio.wait_for(ws.recv(), 15) == "200"


async def test_send_waits_while_the_client_does_not_read(server):
    ctx, conn = await open_raw(server, "/flood")

    def writer_paused() -> bool:  # this test's session (a socket of an earlier test may still be closing)
        return any(c.upgraded is not None and c.upgraded.request.path == "/flood" and c.upgraded.write_paused
                   for c in server.state.connections)

    await wait_until(writer_paused, timeout=5)
    stalled_at = seen["sent"]
    assert stalled_at < FLOOD  # type: ignore[operator]
    # Now read everything: the handler finishes and closes.
    total = 0
    for _ in range(100_000):
        opcode, _, payload = await read_frame(conn)
        if opcode == CLOSE:
            break
        total += 1
    assert total == FLOOD and seen["sent"] == FLOOD
    await ctx.__aexit__(None, None, None)


# -- keep-alive pings ---------------------------------------------------------------------------------------------

async def test_pings_are_sent_and_a_silent_peer_is_dropped_with_1011():
    async with running(app, ws_ping_interval=0.1, ws_ping_timeout=0.3) as srv:
        ctx, conn = await open_raw(srv)
        opcode, _, payload = await read_frame(conn)
        assert opcode == PING and len(payload) == 4
        # no pong: the server gives up
        await expect_close(conn, 1011)
        await ctx.__aexit__(None, None, None)


async def test_a_peer_that_answers_pings_stays_open():
    async with running(app, ws_ping_interval=0.05, ws_ping_timeout=0.5) as srv:
        ctx, conn = await open_raw(srv)
        for _ in range(3):  # three rounds: each pong re-arms the next ping
            opcode, _, payload = await read_frame(conn)
            assert opcode == PING
            await conn.send(frame(PONG, payload))
        await conn.send(frame(TEXT, b"still here"))
        for _ in range(5):
            opcode, _, payload = await read_frame(conn)
            if opcode == TEXT:
                break
            await conn.send(frame(PONG, payload))
        assert payload == b"still here"
        await ctx.__aexit__(None, None, None)


@app.websocket("/backlog")
async def backlog(ws: WebSocket):
    """Reads nothing until told to (its inbox fills, reading pauses), then echoes everything."""
    await ws.accept()
    await seen["go"].wait()  # type: ignore[attr-defined]
    async for message in ws:
        await ws.send(message)


async def test_a_responsive_peer_is_not_timed_out_while_its_messages_wait_unread():
    """The handler leaves 70 messages unread: reading pauses (at 64), so the client's pong sits unread
    in the kernel. Its ping timeout must not count against the peer while the server is not reading,
    and must count again once it reads: a peer that then stops answering is still dropped with 1011."""
    seen.clear()
    seen["go"] = asyncio.Event()
    async with running(app, ws_ping_interval=0.1, ws_ping_timeout=0.3) as srv:
        ctx, conn = await open_raw(srv, "/backlog")
        await conn.send(b"".join(frame(TEXT, b"m%d" % i) for i in range(70)))
        await wait_until(lambda: upgraded_session(srv) is not None and upgraded_session(srv).read_paused)
        opcode, _, payload = await read_frame(conn)
        assert opcode == PING
        await conn.send(frame(PONG, payload))  # answered at once, but not read while paused
        # Wall time must pass here: three ping timeouts, in which the old code closed with 1011.
        await conn.assert_silent(timeout=1.0)
        seen["go"].set()  # type: ignore[attr-defined]
        echoed = []
        for _ in range(200):  # 70 echoes, with the pings of 0.1 s interleaved
            opcode, _, payload = await read_frame(conn)
            if opcode == PING:
                await conn.send(frame(PONG, payload))
                continue
            assert opcode == TEXT, (opcode, payload)
            echoed.append(payload)
            if len(echoed) == 70:
                break
        assert echoed == [b"m%d" % i for i in range(70)]
        await conn.send(frame(TEXT, b"still here"))
        for _ in range(20):
            opcode, _, payload = await read_frame(conn)
            if opcode != PING:
                break
            await conn.send(frame(PONG, payload))
        assert (opcode, payload) == (TEXT, b"still here")
        # Reading again: a peer that stops answering is judged as before.
        await expect_close(conn, 1011)
        await ctx.__aexit__(None, None, None)


# -- Autobahn-style categories with the raw-frame client ------------------------------------------------------------

async def test_ping_is_answered_with_the_same_payload(server):
    ctx, conn = await open_raw(server)
    await conn.send(frame(PING, b"hello?"))
    assert await read_frame(conn) == (PONG, True, b"hello?")
    await conn.send(frame(PING, b"p" * 125))  # the largest control payload
    assert await read_frame(conn) == (PONG, True, b"p" * 125)
    await ctx.__aexit__(None, None, None)


async def test_unsolicited_pong_is_ignored(server):
    ctx, conn = await open_raw(server)
    await conn.send(frame(PONG, b"unasked") + frame(TEXT, b"after"))
    assert await read_frame(conn) == (TEXT, True, b"after")
    await ctx.__aexit__(None, None, None)


async def test_fragments_with_interleaved_control_frames(server):
    ctx, conn = await open_raw(server)
    await conn.send(frame(TEXT, b"frag", fin=False) + frame(PING, b"mid") + frame(CONT, b"men", fin=False)
                    + frame(PONG, b"x") + frame(CONT, b"ted"))
    assert await read_frame(conn) == (PONG, True, b"mid")
    assert await read_frame(conn) == (TEXT, True, b"fragmented")
    await ctx.__aexit__(None, None, None)


async def test_empty_and_large_frames(server):
    ctx, conn = await open_raw(server)
    await conn.send(frame(TEXT, b""))
    assert await read_frame(conn) == (TEXT, True, b"")
    big = os.urandom(70000)  # 64-bit length
    await conn.send(frame(BINARY, big))
    assert await read_frame(conn) == (BINARY, True, big)
    mid = b"m" * 300  # 16-bit length
    await conn.send(frame(BINARY, mid))
    assert await read_frame(conn) == (BINARY, True, mid)
    await ctx.__aexit__(None, None, None)


async def test_a_code_point_split_across_fragments_is_valid(server):
    ctx, conn = await open_raw(server)
    euro = "€".encode()  # three bytes
    await conn.send(frame(TEXT, b"a" + euro[:1], fin=False) + frame(CONT, euro[1:2], fin=False) + frame(CONT, euro[2:]))
    assert await read_frame(conn) == (TEXT, True, b"a" + euro)
    await ctx.__aexit__(None, None, None)


async def test_a_message_in_one_byte_and_empty_fragments_is_reassembled(server):
    """Every byte its own fragment, an empty fragment after each (what the bytearray must not count),
    code points of 2, 3 and 4 bytes straddling them: the text and a binary message come back whole."""
    ctx, conn = await open_raw(server)
    text = "aé€😀" * 50
    for opcode, data in ((TEXT, text.encode()), (BINARY, bytes(range(256)))):
        frames = [frame(opcode, data[:1], fin=False)]
        for byte in data[1:]:
            frames += (frame(CONT, b"", fin=False), frame(CONT, bytes([byte]), fin=False))
        frames.append(frame(CONT, b""))
        await conn.send(b"".join(frames))
        assert await read_frame(conn) == (opcode, True, data)
    await conn.send(frame(TEXT, b"", fin=False) + frame(CONT, b"", fin=False) + frame(CONT, b""))
    assert await read_frame(conn) == (TEXT, True, b"")
    await ctx.__aexit__(None, None, None)


VIOLATIONS = [
    # (name, frames to send, close code expected)
    ("unmasked frame", frame(TEXT, b"x", mask=False), 1002),
    ("reserved bit 1 without an extension", frame(TEXT, b"x", rsv=4), 1002),
    ("reserved bit 2", frame(TEXT, b"x", rsv=2), 1002),
    ("reserved bit 3", frame(TEXT, b"x", rsv=1), 1002),
    ("reserved data opcode 3", frame(3, b"x"), 1002),
    ("reserved control opcode 0xB", frame(0xB, b"x"), 1002),
    ("control frame over 125 bytes", frame(PING, b"p" * 126), 1002),
    ("fragmented control frame", frame(PING, b"p", fin=False), 1002),
    ("orphan continuation", frame(CONT, b"x"), 1002),
    ("new message inside a fragmented one", frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),
    ("close code 999", frame(CLOSE, struct.pack("!H", 999)), 1002),
    ("close code 1005 (reserved)", frame(CLOSE, struct.pack("!H", 1005)), 1002),
    ("close code 1006 (reserved)", frame(CLOSE, struct.pack("!H", 1006)), 1002),
    ("close code 5000", frame(CLOSE, struct.pack("!H", 5000)), 1002),
    ("one-byte close payload", frame(CLOSE, b"\x03"), 1002),
    ("invalid UTF-8 text", frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), 1007),
    ("invalid UTF-8 across fragments", frame(TEXT, b"ok\xf4", fin=False) + frame(CONT, b"\x90\x80\x80"), 1007),
    ("truncated UTF-8 at the end of a message", frame(TEXT, b"a\xe2\x82"), 1007),
    ("truncated UTF-8 at the end of a fragmented message",
     frame(TEXT, b"a\xe2", fin=False) + frame(CONT, b"\x82", fin=False) + frame(CONT, b""), 1007),
    ("invalid UTF-8 in the last fragment", frame(TEXT, b"ok", fin=False) + frame(CONT, b"\xff"), 1007),
    ("a surrogate's first two bytes ending a fragment", frame(TEXT, b"ok\xed\xa0", fin=False), 1007),
    ("invalid UTF-8 after empty fragments",
     frame(TEXT, b"ok\xe2", fin=False) + frame(CONT, b"", fin=False) + frame(CONT, b"(", fin=False), 1007),
    ("invalid UTF-8 in the close reason", frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
]


@pytest.mark.parametrize("name,data,code", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
async def test_protocol_violation_closes_with_its_code(server, name, data, code):
    ctx, conn = await open_raw(server)
    await conn.send(data)
    await expect_close(conn, code)
    await ctx.__aexit__(None, None, None)


async def test_valid_close_codes_are_echoed(server):
    for code in (1000, 1001, 1003, 1011, 3000, 4999):
        ctx, conn = await open_raw(server)
        await conn.send(frame(CLOSE, struct.pack("!H", code) + b"r"))
        await expect_close(conn, code)
        await ctx.__aexit__(None, None, None)


# -- permessage-deflate --------------------------------------------------------------------------------------------

async def test_permessage_deflate_is_negotiated_with_bounded_windows(server):
    async with connect(url(server)) as ws:  # the client offers permessage-deflate by default
        ext = ws.response.headers["Sec-WebSocket-Extensions"]
        assert "permessage-deflate" in ext and "server_max_window_bits=12" in ext
        # No zlib state survives a message either way: an idle socket keeps none (README, deflate memory).
        assert "server_no_context_takeover" in ext and "client_no_context_takeover" in ext
        text = "compress me " * 5000
        await ws.send(text)
        assert await ws.recv() == text


async def test_no_context_takeover_when_the_client_asks(server):
    async with raw_connection(server) as conn:
        await conn.send(handshake(extra="Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"))
        response = await conn.read_response()
        assert response.status == 101
        assert "server_no_context_takeover" in response.header("sec-websocket-extensions")


async def test_deflate_can_be_turned_off():
    async with running(app, ws_ping_interval=None, ws_per_message_deflate=False) as srv:
        async with connect(url(srv)) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("x")
            assert await ws.recv() == "x"


async def test_a_compressed_message_inflating_past_max_size_closes_1009():
    async with running(app, ws_ping_interval=None, ws_max_size=10_000) as srv:
        async with connect(url(srv), max_size=None) as ws:
            await ws.send("z" * 10_001)  # a few dozen bytes on the wire
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1009


# -- many at once ------------------------------------------------------------------------------------------------------

async def test_a_thousand_concurrent_echo_clients(server):
    async def one(i: int) -> str:
        async with connect(url(server), compression=None, open_timeout=20) as ws:
            await ws.send(f"m{i}")
            return await ws.recv()

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 60)
    assert results == [f"m{i}" for i in range(1000)]


# -- settings ------------------------------------------------------------------------------------------------------------

def test_ws_settings_validate_and_parse_from_flags():
    from aioserve.cli import build_parser, settings_from_args
    from aioserve.config import Config

    args = build_parser().parse_args(["m:app", "--ws-max-size", "10", "--ws-ping-interval", "0",
                                      "--ws-ping-timeout", "5", "--no-ws-per-message-deflate"])
    settings = settings_from_args(args)
    config = Config.from_settings(**settings)
    assert (config.ws_max_size, config.ws_ping_interval, config.ws_ping_timeout, config.ws_per_message_deflate) \
        == (10, None, 5.0, False)
    with pytest.raises(ValueError):
        Config.from_settings(ws_max_size=0)
    with pytest.raises(ValueError):
        Config.from_settings(ws_ping_timeout=-1)


# -- over TLS ------------------------------------------------------------------------------------------------------------

async def test_wss_over_tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(key_file)
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(cert_file, append=i > 0)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with running(app, ws_ping_interval=None, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as srv:
        async with connect(f"wss://{HOST}:{srv.port}/echo", ssl=context) as ws:
            await ws.send("over tls")
            assert await ws.recv() == "over tls"
            await ws.send(b"b" * 200_000)
            assert await ws.recv() == b"b" * 200_000
        assert ws.close_code == 1000


@app.websocket("/misuse")
async def misuse(ws: WebSocket):
    for call in (ws.receive(), ws.send("x")):
        try:
            await call
        except RuntimeError:
            seen.setdefault("runtime_errors", 0)
            seen["runtime_errors"] += 1  # type: ignore[operator]
    await ws.accept()
    try:
        await ws.accept()
    except RuntimeError:
        seen["twice"] = True
    await ws.send("ok")


async def test_receive_or_send_before_accept_and_accept_twice_raise(server):
    async with connect(url(server, "/misuse")) as ws:
        assert await ws.recv() == "ok"
    assert seen["runtime_errors"] == 2 and seen["twice"] is True


@app.websocket("/early-boom")
async def early_boom(ws: WebSocket):
    raise RuntimeError("before accept")


async def test_an_exception_before_accept_answers_500_and_logs(server):
    with capture_logs() as logs:
        async with raw_connection(server) as conn:
            await conn.send(handshake("/early-boom"))
            assert (await conn.read_response()).status == 500
            assert await conn.is_closed_by_peer()
    assert len([r for r in logs.at_least(logging.ERROR) if r.exc_info]) == 1


# -- the per-message path: batched writes stay ordered and bounded -------------------------------------------

async def test_a_batch_of_frames_in_one_segment_is_echoed_in_order_with_opcodes(server):
    messages = [(TEXT, f"κόσμε {i}".encode()) if i % 3 else (BINARY, bytes([i]) * i) for i in range(60)]
    ctx, conn = await open_raw(server)
    await conn.send(b"".join(frame(op, payload) for op, payload in messages))  # one write: one read, mostly
    for op, payload in messages:
        assert await read_frame(conn) == (op, True, payload)
    # Invalid UTF-8 in the middle of a batch: 1007 at once (the socket is closing before the handler
    # could echo "before"), and nothing after the bad frame is delivered.
    await conn.send(frame(TEXT, b"before") + frame(TEXT, b"bad \xff") + frame(TEXT, b"after"))
    await expect_close(conn, 1007)
    await ctx.__aexit__(None, None, None)


@app.websocket("/push")
async def push(ws: WebSocket):
    """Sends without ever receiving: its message must go out at the loop's turn, not wait for more."""
    await ws.accept()
    await ws.send("first")
    await release["event"].wait()  # type: ignore[union-attr]
    await ws.send("second")


async def test_a_send_goes_out_without_the_handler_waiting_on_receive(server):
    release["event"] = asyncio.Event()
    async with connect(url(server, "/push"), compression=None) as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "first"  # the handler is still parked on the event
        release["event"].set()
        assert await asyncio.wait_for(ws.recv(), 5) == "second"


BURST, BURST_SIZE = 12_000, 1024  # 12 MiB of small messages: more than loopback's socket buffers hold


@app.websocket("/burst")
async def burst(ws: WebSocket):
    """Small sends in a loop that never waits for anything else: coalescing must not buffer them all."""
    await ws.accept()
    seen["burst"] = 0
    for i in range(BURST):
        await ws.send(i.to_bytes(4, "big") * (BURST_SIZE // 4))
        seen["burst"] += 1  # type: ignore[operator]
    await ws.close()


async def test_small_sends_in_a_tight_loop_wait_for_a_client_that_does_not_read(server):
    from aioserve.wsconn import FLUSH_AT

    ctx, conn = await open_raw(server, "/burst", rcvbuf=16384)  # small: the server stalls after a few MiB at most

    def session():
        return next((c.upgraded for c in server.state.connections if c.upgraded is not None), None)

    await wait_until(lambda: session() is not None and session().write_paused, timeout=15)
    stalled_at = seen["burst"]
    assert stalled_at < BURST  # type: ignore[operator]
    assert session().unsent < FLUSH_AT  # what is not yet handed to the transport stays under the bound
    for i in range(BURST):
        assert await read_frame(conn) == (BINARY, True, i.to_bytes(4, "big") * (BURST_SIZE // 4))
    opcode, _, payload = await read_frame(conn)
    assert (opcode, payload[:2]) == (CLOSE, struct.pack("!H", 1000))
    assert seen["burst"] == BURST
    await ctx.__aexit__(None, None, None)


async def test_an_ordinary_get_route_does_not_hide_a_websocket_route_from_an_upgrade():
    app = App()

    @app.get("/rooms/lobby")
    async def lobby_page(request):
        return "the lobby's page"

    @app.websocket("/rooms/{room}")
    async def room(ws: WebSocket, room: str):
        await ws.accept()
        await ws.send(f"welcome to {room}")
        await ws.close()

    async with running(app) as server:
        async with connect(f"ws://{HOST}:{server.port}/rooms/lobby") as client:
            assert await client.recv() == "welcome to lobby"
        async with raw_connection(server) as conn:  # a plain GET still gets the ordinary route
            response = await conn.request("GET", "/rooms/lobby")
            assert response.status == 200 and response.body == b"the lobby's page"


async def test_a_plain_get_on_a_websocket_route_with_positional_parameters_is_426():
    app = App()

    @app.websocket("/chat/{room}/{user:int}")
    async def chat(ws: WebSocket, room, user):  # taken positionally
        await ws.accept()

    async with running(app) as server, raw_connection(server) as conn:
        response = await conn.request("GET", "/chat/lobby/7")
        assert response.status == 426 and response.header("upgrade") == "websocket"
