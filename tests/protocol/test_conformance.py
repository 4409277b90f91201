"""RFC 9110 / 9112 conformance points of issue 16, each over a raw socket against a real server.

Each test names the RFC section it checks. A point found broken gets a test first, marked
``xfail(strict=True)`` until the fix lands, so the fix makes the strict mark fail and the mark comes off.
"""

from __future__ import annotations

import os
import sys

import pytest

from aioserve import App
from tests.support import ServerProcess, raw_connection, request_bytes, running

FOLLOW_UP = b"GET /?after HTTP/1.1\r\nHost: x\r\n\r\n"


def conformance_app() -> tuple[App, list[str]]:
    seen: list[str] = []  # "METHOD HTTP/x.y" of every request a handler saw
    app = App()

    @app.route("/", methods=["GET", "POST", "OPTIONS"])
    async def index(request):
        seen.append(f"{request.method} {request.http_version}")
        return {"method": request.method, "version": request.http_version, "size": len(await request.body())}

    @app.post("/echo", max_body_size=None)
    async def echo(request):
        size = 0
        async for piece in request.stream():
            size += len(piece)
        return {"size": size}

    return app, seen


async def _refused_and_closed(payload: bytes, status: int) -> list[str]:
    """Send ``payload`` and an innocent request after it; expect one ``status`` answer, then a close."""
    app, seen = conformance_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(payload + FOLLOW_UP)
        response = await conn.read_final_response()
        assert response.status == status, (response.status, response.body)
        assert "close" in response.connection_tokens()
        assert await conn.is_closed_by_peer(), "the connection stayed open after a framing error"
    return seen


# --- RFC 9110 9.1: an unknown method ---------------------------------------------------------------

async def test_unknown_method_token_gets_501():
    """RFC 9110 9.1: "An origin server that receives a request method that is unrecognized or not
    implemented SHOULD respond with the 501 (Not Implemented) status code." ``FOOBAR`` is a valid token."""
    app, seen = conformance_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(b"FOOBAR / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.read_final_response()
        assert response.status == 501, (response.status, response.body)
        assert seen == []


async def test_malformed_method_is_still_400():
    """RFC 9110 9.1 / 5.6.2: a method that is not a token is a malformed request line (400), not 501."""
    seen = await _refused_and_closed(b"GE(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
    assert seen == []


# --- RFC 9110 6.2: a higher minor version ------------------------------------------------------------

async def test_http_1_2_is_processed_as_http_1_1():
    """RFC 9110 6.2: a recipient "SHOULD process [a message with a higher minor version] as if it were
    in the highest minor version within that major version to which the recipient is conformant" and
    answers in its own version, HTTP/1.1."""
    app, seen = conformance_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n")
        response = await conn.read_final_response()
        assert (response.status, response.version) == (200, "1.1"), (response.status, response.body)
        await conn.send(request_bytes("GET", "/"))  # and the connection is kept alive as for 1.1
        assert (await conn.read_final_response()).status == 200


async def test_http_2_0_request_line_is_505():
    """RFC 9110 6.2 / 15.6.6: a different major version is not processed: 505."""
    await _refused_and_closed(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)


# --- RFC 9110 9.3.7: OPTIONS * -----------------------------------------------------------------------

async def test_options_asterisk_gets_2xx_with_allow():
    """RFC 9110 9.3.7: ``OPTIONS *`` asks about the server in general; it is answered by the server (a
    2xx, here with ``Allow`` listing the methods it implements), not looked up as a resource."""
    app, seen = conformance_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.read_final_response("OPTIONS")
        assert 200 <= response.status < 300, (response.status, response.body)
        allow = {m.strip() for m in (response.header("allow") or "").split(",") if m.strip()}
        assert {"GET", "OPTIONS"} <= allow, response.headers


# --- RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 ----------------------------------------------------

async def test_http10_with_transfer_encoding_is_400_and_closed():
    """RFC 9112 6.1: "A server that receives a request message with a transfer coding it does not
    understand SHOULD respond with 501" and "if a Transfer-Encoding header field is present in a request
    containing [HTTP/1.0] ... the server MUST close the connection after responding", because its framing
    is faulty. The issue chooses 400 and close, with nothing processed."""
    seen = await _refused_and_closed(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400)
    assert seen == []


# --- RFC 9112 3: whitespace in the request line ------------------------------------------------------

async def test_two_spaces_in_request_line_is_400():
    """RFC 9112 3: ``request-line = method SP request-target SP HTTP-version``, with exactly one SP;
    3 lets a server parse on whitespace, but a lenient split is how a front end and a back end come to
    disagree on the target (smuggling). Refuse with 400."""
    seen = await _refused_and_closed(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400)
    assert seen == []


@pytest.mark.parametrize("line", [b"GET\t/ HTTP/1.1", b"GET /\tHTTP/1.1", b"GET / HTTP/1.1\t"],
                         ids=["tab-after-method", "tab-before-version", "tab-after-version"])
async def test_tab_in_request_line_is_400(line):
    """RFC 9112 3: the request line's separators are single SP; a tab (HTAB) is not one of them."""
    seen = await _refused_and_closed(line + b"\r\nHost: x\r\n\r\n", 400)
    assert seen == []


async def test_trailing_space_after_version_is_400():
    """RFC 9112 3: ``HTTP-version`` is followed directly by CRLF; ``HTTP/1.1 `` is not a version."""
    seen = await _refused_and_closed(b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400)
    assert seen == []


# --- RFC 9112 7.1.1: chunk extensions ----------------------------------------------------------------

def _chunked(body_chunks: list[bytes], extension: bytes = b"") -> bytes:
    out = [b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for chunk in body_chunks:
        out.append(b"%x%s\r\n%s\r\n" % (len(chunk), extension, chunk))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


async def test_short_chunk_extension_is_accepted():
    """RFC 9112 7.1.1: a recipient ignores chunk extensions it does not understand."""
    app, _ = conformance_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(_chunked([b"hello"], b";name=" + b"v" * 4000))
        response = await conn.read_final_response()
        assert (response.status, response.body) == (200, b'{"size":5}')


async def test_chunk_extension_over_4_kib_is_400():
    """RFC 9112 7.1.1 lets a server limit chunk extensions ("a server ought to limit the total length
    of chunk extensions received in a request to an amount reasonable for the services provided") and
    answer 4xx past it; aioserve's limit is ``limit_chunk_extension`` (4 KiB)."""
    await _refused_and_closed(_chunked([b"hello"], b";name=" + b"v" * 5000), 400)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


TINY_CHUNKS = 100_000
TINY_CHUNKS_CPU_BUDGET = 1.0  # seconds of server CPU; measured 0.11 s on both loops with chunk-size lines bounded (0.03-0.04 s before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's CPU time from /proc")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_many_tiny_chunks_are_processed_within_a_cpu_budget(loop):
    """RFC 9112 7.1: nothing bounds the number of chunks, so 100,000 one-byte chunks (600 kB on the wire
    for 100 kB of body) must be processed, and cheaply: a bounded CPU cost, measured on the server."""
    import socket

    payload = _chunked([b"x"] * TINY_CHUNKS)
    with ServerProcess("tests.support.apps:hostile_served_app", "--port", "0", "--loop", loop, "--no-access-log") as server:
        port = server.wait_listening().port
        before = _cpu_seconds(server.proc.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(payload)
            data = b""
            for _ in range(1000):
                piece = sock.recv(65536)
                data += piece
                if not piece or b'{"size":' in data and data.endswith(b"}"):
                    break
        used = _cpu_seconds(server.proc.pid) - before
        print(f"\n{TINY_CHUNKS} one-byte chunks on {loop}: {used:.3f} s of server CPU")
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        assert data.endswith(b'{"size":%d}' % TINY_CHUNKS), data[-200:]
        assert used < TINY_CHUNKS_CPU_BUDGET, f"{used:.2f} s of CPU for {TINY_CHUNKS} chunks"


# --- the same points for requests pipelined behind others ----------------------------------------------

AHEAD_OF_IT = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
               b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")


@pytest.mark.parametrize("line, status", [
    (b"GET  / HTTP/1.1", 400),  # RFC 9112 3
    (b"FOOBAR / HTTP/1.1", 501),  # RFC 9110 9.1
    (b"GET / HTTP/2.0", 505),  # RFC 9110 6.2
], ids=["two-spaces", "unknown-method", "http-2.0"])
async def test_a_request_line_behind_pipelined_requests_gets_the_same_answer(line, status):
    """Behind a Content-Length body and a chunked body with a trailer, in one write: the two before it
    are answered, then ``status``, then the connection closes."""
    app, seen = conformance_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(AHEAD_OF_IT + line + b"\r\nHost: x\r\n\r\n" + FOLLOW_UP)
        statuses = [(await conn.read_final_response(method="POST")).status for _ in range(2)]
        final = await conn.read_final_response()
        assert statuses + [final.status] == [200, 200, status], (statuses, final.status, final.body)
        assert await conn.is_closed_by_peer()
    assert seen == ["POST 1.1", "POST 1.1"]


async def test_http_1_2_behind_pipelined_requests_is_processed_as_1_1():
    """RFC 9110 6.2 for a request that does not begin a read."""
    app, seen = conformance_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(AHEAD_OF_IT + b"GET / HTTP/1.2\r\nHost: x\r\n\r\n" + FOLLOW_UP)
        statuses = [(await conn.read_final_response(method=m)).status for m in ("POST", "POST", "GET", "GET")]
        assert statuses == [200, 200, 200, 200]
    assert seen == ["POST 1.1", "POST 1.1", "GET 1.1", "GET 1.1"]
