"""Limits: each one crossed by one byte (or one item) and kept under, plus pipelining, connection
limits, the listen backlog and accept() under descriptor exhaustion."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import pytest

from aioserve import cli
from tests.support import (
    HOST,
    HostileClient,
    NotReached,
    RawConnection,
    ServerProcess,
    Timed,
    raw_connection,
    request_bytes,
    running,
    wait_until,
)
from tests.support.apps import hostile_app


async def assert_rejected(conn: RawConnection, status: int) -> None:
    resp = await conn.read_final_response()
    assert resp.status == status, (resp.status, resp.body)
    assert "close" in resp.connection_tokens(), resp.headers
    assert await conn.is_closed_by_peer(), f"connection left open after {status}"


async def assert_server_still_serves(server) -> None:
    async with raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200


# --------------------------------------------------------------------------
# Request line / URL: 414
# --------------------------------------------------------------------------


def target_of(length: int) -> str:
    prefix = "/long/"
    return prefix + "a" * (length - len(prefix))


@pytest.mark.parametrize("limit", [64, None], ids=["limit64", "default8192"])
async def test_request_target_at_limit_accepted_one_over_is_414(limit):
    app, _ = hostile_app()
    settings = {} if limit is None else {"limit_request_line": limit}
    limit = limit or 8192
    async with running(app, **settings) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", target_of(limit)))
            resp = await conn.read_final_response()
            assert resp.status == 200 and resp.body == b'{"len":%d}' % limit
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", target_of(limit + 1)))
            await assert_rejected(conn, 414)
        await assert_server_still_serves(server)


async def test_endless_request_target_is_cut_off_without_a_line_end():
    """A target that never ends is refused once it crosses the limit, not buffered until CRLF."""
    app, _ = hostile_app()
    async with running(app, limit_request_line=1000) as server, raw_connection(server) as conn:
        await conn.send(b"GET /" + b"a" * 1500)  # no CRLF, ever
        await assert_rejected(conn, 414)


async def test_target_under_line_limit_split_across_writes_is_accepted():
    """The request line is not part of the header section: a long (allowed) target that arrives in
    several reads must not be mistaken for an oversized header line."""
    app, _ = hostile_app()
    async with running(app, limit_request_line=4000, limit_request_header_size=1000) as server:
        client = await HostileClient.open(server.port)
        try:
            await client.dribble(request_bytes("GET", target_of(3000)), interval=0.02, piece=500)
            resp = await client.response()
            assert resp.status == 200, (resp.status, resp.body)
        finally:
            client.close()


# --------------------------------------------------------------------------
# Header section: 431
# --------------------------------------------------------------------------


def headers_totalling(size: int) -> list[tuple[str, str]]:
    """Header fields whose lines (``Name: value\\r\\n``, Host included) add up to ``size`` bytes."""
    host_line = len(f"Host: {HOST}\r\n")
    pad = size - host_line - len("X-Pad: \r\n")
    assert pad > 0
    return [("Host", HOST), ("X-Pad", "p" * pad)]


@pytest.mark.parametrize("limit", [1000, None], ids=["limit1000", "default32768"])
async def test_header_section_at_limit_accepted_one_over_is_431(limit):
    app, _ = hostile_app()
    settings = {} if limit is None else {"limit_request_header_size": limit}
    limit = limit or 32768
    async with running(app, **settings) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/", headers=headers_totalling(limit), host=False))
            resp = await conn.read_final_response()
            assert resp.status == 200, (resp.status, resp.body)
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/", headers=headers_totalling(limit + 1), host=False))
            await assert_rejected(conn, 431)
        await assert_server_still_serves(server)


async def test_header_section_limit_counts_many_small_fields():
    app, _ = hostile_app()
    async with running(app, limit_request_header_size=2000, limit_request_fields=1000) as server:
        async with raw_connection(server) as conn:
            fields = [(f"X-F{i:03d}", "v" * 10) for i in range(150)]  # 150 * 20 bytes = 3000
            await conn.send(request_bytes("GET", "/", headers=fields))
            await assert_rejected(conn, 431)


async def test_endless_header_line_is_cut_off_without_a_line_end():
    app, _ = hostile_app()
    async with running(app, limit_request_header_size=1000) as server, raw_connection(server) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"v" * 2000)  # no CRLF, ever
        await assert_rejected(conn, 431)


async def test_endless_header_line_dribbled_in_pieces_is_cut_off():
    app, _ = hostile_app()
    async with running(app, limit_request_header_size=1000) as server:
        client = await HostileClient.open(server.port)
        try:
            await client.dribble(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"v" * 1200, 0.01, piece=100)
            resp = await client.response()
            assert resp.status == 431 and "close" in (resp.header("connection") or "")
            assert await client.closed()
        finally:
            client.close()


@pytest.mark.parametrize("limit", [10, None], ids=["limit10", "default100"])
async def test_header_fields_at_limit_accepted_one_over_is_431(limit):
    app, _ = hostile_app()
    settings = {} if limit is None else {"limit_request_fields": limit}
    limit = limit or 100
    async with running(app, **settings) as server:
        async with raw_connection(server) as conn:
            fields = [(f"X-F{i}", "v") for i in range(limit - 1)]  # plus Host: exactly ``limit``
            await conn.send(request_bytes("GET", "/headers", headers=fields))
            resp = await conn.read_final_response()
            assert resp.status == 200 and resp.body == b'{"count":%d}' % limit
        async with raw_connection(server) as conn:
            fields = [(f"X-F{i}", "v") for i in range(limit)]
            await conn.send(request_bytes("GET", "/headers", headers=fields))
            await assert_rejected(conn, 431)
        await assert_server_still_serves(server)


# --------------------------------------------------------------------------
# Body size: 413
# --------------------------------------------------------------------------


async def test_body_of_exactly_the_limit_accepted():
    app, _ = hostile_app()
    async with running(app, max_body_size=1000) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("POST", "/echo", body=b"x" * 1000))
        resp = await conn.read_final_response()
        assert resp.status == 200 and resp.body == b'{"size":1000}'
        # keep-alive continues after a body at the limit
        await conn.send(request_bytes("POST", "/echo", body=b"x" * 999))
        assert (await conn.read_final_response()).body == b'{"size":999}'


async def test_content_length_one_over_is_413_before_the_body_is_sent():
    app, _ = hostile_app()
    async with running(app, max_body_size=1000) as server, raw_connection(server) as conn:
        # Only the head: the answer must not wait for a body that never comes.
        await conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        timer = Timed()
        await assert_rejected(conn, 413)
        assert timer.elapsed < 2.0


async def test_huge_content_length_is_413_at_once():
    app, _ = hostile_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\n")
        await assert_rejected(conn, 413)


async def test_chunked_body_at_limit_accepted():
    app, _ = hostile_app()
    async with running(app, max_body_size=1000) as server, raw_connection(server) as conn:
        body = b"1f4\r\n" + b"c" * 500 + b"\r\n" + b"1f4\r\n" + b"c" * 500 + b"\r\n0\r\n\r\n"
        await conn.send(request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + body)
        resp = await conn.read_final_response()
        assert resp.status == 200 and resp.body == b'{"size":1000}'


async def test_chunked_body_crossing_limit_is_413_as_soon_as_it_crosses():
    app, _ = hostile_app()
    async with running(app, max_body_size=1000) as server, raw_connection(server) as conn:
        head = request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")])
        # 1001 bytes of chunks and no last chunk: the 413 cannot wait for the end of the body.
        await conn.send(head + b"3e8\r\n" + b"c" * 1000 + b"\r\n" + b"1\r\nc\r\n")
        timer = Timed()
        await assert_rejected(conn, 413)
        assert timer.elapsed < 2.0


async def test_chunked_body_crossing_limit_with_a_handler_that_has_not_read_yet():
    """The handler parks before reading: the 413 still comes as the body crosses the limit."""
    app, probe = hostile_app()

    @app.post("/parked", max_body_size=1000)
    async def parked(request):
        await asyncio.wait_for(probe.event().wait(), 30)
        return {"size": len(await request.body())}

    async with running(app) as server, raw_connection(server) as conn:
        head = request_bytes("POST", "/parked", headers=[("Transfer-Encoding", "chunked")])
        await conn.send(head + b"3e9\r\n" + b"c" * 1001 + b"\r\n")
        try:
            await assert_rejected(conn, 413)
        finally:
            probe.event().set()


async def test_per_route_unlimited_body_streams_past_the_server_limit():
    app, _ = hostile_app()
    async with running(app, max_body_size=1000) as server, raw_connection(server) as conn:
        size = 3 * 1024 * 1024
        writer = asyncio.ensure_future(conn.send_ignoring_errors(request_bytes("POST", "/upload", body=b"u" * size)))
        resp = await conn.read_final_response(timeout=15)
        assert await asyncio.wait_for(writer, 15)
        assert resp.status == 200 and resp.body == b'{"size":%d}' % size


async def test_per_route_smaller_limit():
    app, _ = hostile_app()
    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("POST", "/small", body=b"s" * 10))
            assert (await conn.read_final_response()).body == b'{"size":10}'
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("POST", "/small", body=b"s" * 11))
            await assert_rejected(conn, 413)


async def test_max_body_size_none_disables_the_server_limit():
    app, _ = hostile_app()
    async with running(app, max_body_size=None) as server, raw_connection(server) as conn:
        size = 2 * 1024 * 1024 + 1
        writer = asyncio.ensure_future(conn.send_ignoring_errors(request_bytes("POST", "/echo", body=b"n" * size)))
        resp = await conn.read_final_response(timeout=15)
        assert await asyncio.wait_for(writer, 15)
        assert resp.status == 200 and resp.body == b'{"size":%d}' % size


async def test_requests_pipelined_after_a_413_are_not_processed():
    app, probe = hostile_app()
    async with running(app, max_body_size=10) as server, raw_connection(server) as conn:
        await conn.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nxxxxxxxxxxx"
            + request_bytes("GET", "/")
        )
        await assert_rejected(conn, 413)
        assert probe.started == 0


# --------------------------------------------------------------------------
# Pipelining: bounded, by not reading
# --------------------------------------------------------------------------


async def test_pipeline_is_bounded_by_pausing_reads_and_resumes():
    limit = 4
    app, probe = hostile_app()
    async with running(app, limit_pipeline=limit) as server, raw_connection(server) as conn:
        one = request_bytes("GET", "/block")
        sent = 0
        for i in range(20):
            await conn.send(one)
            sent += 1
            try:
                await wait_until(lambda: probe.started > i, timeout=0.4)
            except NotReached:
                break  # the server stopped reading: this request waits in the socket
        # The server stopped reading once the queue passed its bound: the rest waits in the socket.
        assert limit <= probe.started <= limit + 1, probe.started
        assert sent <= limit + 2
        # More requests, sent while paused, are not parsed either.
        await conn.send(one * 10)
        await asyncio.sleep(0.2)
        assert probe.started <= limit + 1
        # Let the handlers finish: reading resumes and every request is answered, in order.
        probe.event().set()
        responses = await conn.read_responses(sent + 10, timeout=10)
        assert [r.status for r in responses] == [200] * (sent + 10)
        assert probe.finished == sent + 10


async def test_flood_of_pipelined_requests_all_answered_in_order():
    app, probe = hostile_app()
    async with running(app, limit_pipeline=8) as server, raw_connection(server) as conn:
        count = 500
        data = b"".join(request_bytes("GET", f"/long/{i}") for i in range(count))
        writer = asyncio.ensure_future(conn.send_ignoring_errors(data, piece=4096))
        responses = await conn.read_responses(count, timeout=20)
        assert await asyncio.wait_for(writer, 10)
        assert [r.body for r in responses] == [b'{"len":%d}' % len(f"/long/{i}") for i in range(count)]


# --------------------------------------------------------------------------
# Connection limit, backlog, accept() failures
# --------------------------------------------------------------------------


async def test_limit_connections_refuses_extra_connection_with_fast_503():
    app, _ = hostile_app()
    async with running(app, limit_connections=2) as server:
        first = await RawConnection.open(server.port)
        second = await RawConnection.open(server.port)
        try:
            for conn in (first, second):
                await conn.send(request_bytes("GET", "/"))
                assert (await conn.read_final_response()).status == 200
            third = await RawConnection.open(server.port)
            try:
                timer = Timed()
                resp = await third.read_final_response(timeout=3)  # no request needed
                assert timer.elapsed < 1.0
                assert resp.status == 503
                assert "close" in resp.connection_tokens()
                assert await third.is_closed_by_peer()
            finally:
                await third.close()
            # The existing connections are unaffected.
            for conn in (first, second):
                await conn.send(request_bytes("GET", "/"))
                assert (await conn.read_final_response()).status == 200
            # A slot frees up when a connection closes.
            await second.close()
            await wait_until(lambda: server.connections <= 1, timeout=3)
            fourth = await RawConnection.open(server.port)
            try:
                await fourth.send(request_bytes("GET", "/"))
                assert (await fourth.read_final_response()).status == 200
            finally:
                await fourth.close()
        finally:
            await first.close()
            await second.close()


async def test_no_connection_limit_by_default():
    app, _ = hostile_app()
    async with running(app) as server:
        conns = [await RawConnection.open(server.port) for _ in range(50)]
        try:
            for conn in conns:
                await conn.send(request_bytes("GET", "/"))
            for conn in conns:
                assert (await conn.read_final_response()).status == 200
        finally:
            for conn in conns:
                await conn.close()


def listen_backlog(port: int) -> int | None:
    """The backlog of a listening socket, from ``ss`` (Send-Q of a LISTEN socket)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10)
    for line in out.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == "LISTEN":
            return int(parts[2])
    return None


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read a listen backlog")
@pytest.mark.parametrize("backlog", [77, None], ids=["backlog77", "default2048"])
async def test_backlog_is_passed_to_listen(backlog):
    app, _ = hostile_app()
    settings = {} if backlog is None else {"backlog": backlog}
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
    except OSError:
        somaxconn = 4096
    async with running(app, **settings) as server:
        seen = await asyncio.to_thread(listen_backlog, server.port)
        assert seen == min(backlog or 2048, somaxconn)


def test_cli_flags_reach_the_settings():
    args = cli.build_parser().parse_args([
        "x:app", "--max-body-size", "-1", "--limit-request-line", "111", "--limit-request-fields", "22",
        "--limit-request-header-size", "3333", "--limit-pipeline", "7", "--limit-connections", "9",
        "--backlog", "55", "--timeout-keep-alive", "5", "--timeout-header", "2.5", "--timeout-body", "3",
        "--timeout-write", "4", "--timeout-graceful-shutdown", "6",
    ])
    settings = cli.settings_from_args(args)
    assert settings["max_body_size"] is None
    expected = {
        "limit_request_line": 111, "limit_request_fields": 22, "limit_request_header_size": 3333,
        "limit_pipeline": 7, "limit_connections": 9, "backlog": 55, "timeout_keep_alive": 5,
        "timeout_header": 2.5, "timeout_body": 3, "timeout_write": 4, "timeout_graceful_shutdown": 6,
    }
    assert {k: settings[k] for k in expected} == expected
    defaults = cli.settings_from_args(cli.build_parser().parse_args(["x:app"]))
    assert defaults["max_body_size"] == 1024 * 1024
    assert defaults["limit_request_line"] == 8192
    assert defaults["limit_request_fields"] == 100
    assert defaults["limit_request_header_size"] == 32768
    assert defaults["limit_pipeline"] == 32
    assert defaults["limit_connections"] is None
    assert defaults["backlog"] == 2048
    assert defaults["timeout_keep_alive"] == 75
    assert defaults["timeout_header"] == 15
    assert defaults["timeout_body"] == 30
    assert defaults["timeout_write"] == 30
    assert defaults["timeout_graceful_shutdown"] == 30


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_accept_out_of_descriptors_backs_off_and_keeps_serving(loop):
    """With RLIMIT_NOFILE exhausted, accept() fails with EMFILE: the server must survive it and
    serve again once descriptors are free."""
    pytest.importorskip(loop)
    with ServerProcess(
        *["tests.support.apps:hostile_served_app", "--port", "0", "--loop", loop, "--no-access-log",
         "--timeout-header", "30"],
        nofile=64,
    ) as proc:
        port = proc.wait_listening().port
        socks = []
        try:
            for _ in range(90):  # well past the server's 64 descriptors
                s = socket.create_connection((HOST, port), timeout=5)
                socks.append(s)
            # Connections accepted before the limit still work.
            socks[0].sendall(request_bytes("GET", "/"))
            socks[0].settimeout(5)
            assert socks[0].recv(65536).startswith(b"HTTP/1.1 200")
            # The server says when accept() ran out of descriptors (one warning, rate-limited).
            proc.wait_for("out of file descriptors", timeout=10)
            assert proc.proc.poll() is None, f"server died:\n{proc.output}"
        finally:
            for s in socks:
                s.close()
        # Descriptors free again: new connections are served within a few seconds (the dead
        # connections still queued in the backlog are accepted and closed first).
        ok = False
        deadline = time.monotonic() + 20
        for _ in range(200):
            try:
                with socket.create_connection((HOST, port), timeout=1) as s:
                    s.settimeout(1)
                    s.sendall(request_bytes("GET", "/"))
                    if s.recv(65536).startswith(b"HTTP/1.1 200"):
                        ok = True
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            # No event says "accepting again": libuv may still drop queued connections while it drains
            # the backlog, so each attempt is judged by the server's answer, and paced.
            time.sleep(0.1)
        assert ok, f"server stopped serving after EMFILE:\n{proc.output}"
        assert proc.proc.poll() is None
        # A capacity problem is a warning, not an error with a traceback per retry.
        assert "Traceback" not in proc.output and " ERROR " not in proc.output, proc.output
