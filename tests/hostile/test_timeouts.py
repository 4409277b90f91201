"""Timeouts: header (absolute), keep-alive idle, body (inactivity), write (client not reading), and
what happens to connections that send nothing or only open and close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aioserve import App

from tests.support import (
    HostileClient,
    RawConnection,
    Timed,
    capture_logs,
    describe_contexts,
    loop_exceptions,
    raw_connection,
    request_bytes,
    running,
    wait_until,
)
from tests.support.apps import hostile_app

SLACK_EARLY = 0.2
SLACK_LATE_MIN = 0.25


def assert_near(elapsed: float, expected: float) -> None:
    """Within 0.2 s early, and late by less than half the timeout itself (never under 0.25 s, for a
    loaded machine): a timeout that fires at twice its setting must fail here."""
    late = max(SLACK_LATE_MIN, expected / 2)
    assert late < expected, "use a timeout long enough that doubling it leaves the window"
    assert expected - SLACK_EARLY <= elapsed <= expected + late, f"{elapsed:.2f}s, expected ~{expected}s"


# --------------------------------------------------------------------------
# Header timeout
# --------------------------------------------------------------------------


async def test_slowloris_dribbling_client_gets_408_at_the_absolute_deadline():
    """Bytes keep arriving every 0.1 s, well inside any inactivity window, yet the head is not
    complete when ``timeout_header`` runs out from the connection's start: 408, then close."""
    app, probe = hostile_app()
    async with running(app, timeout_header=1.0) as server:
        timer = Timed()
        client = await HostileClient.open(server.port)
        head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 200 + b"\r\n\r\n"
        dribbler = asyncio.ensure_future(client.dribble(head, interval=0.1))
        try:
            resp = await client.response(timeout=5)
            elapsed = timer.elapsed
            assert resp.status == 408
            assert "close" in (resp.header("connection") or "")
            assert await client.closed(timeout=2)
            assert_near(elapsed, 1.0)
            assert not dribbler.done() or await dribbler >= 5, "the client must still be dribbling at the deadline"
            assert probe.started == 0
        finally:
            dribbler.cancel()
            await asyncio.gather(dribbler, return_exceptions=True)
            client.close()


async def test_one_byte_a_second_is_cut_off_at_the_header_timeout():
    """The issue's slowloris shape (one byte a second) against a 1.5 s deadline: two bytes arrive,
    the head has begun, and the answer is a 408, not a silent close."""
    app, _ = hostile_app()
    async with running(app, timeout_header=1.5) as server:
        timer = Timed()
        client = await HostileClient.open(server.port)
        dribbler = asyncio.ensure_future(client.dribble(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", interval=1.0))
        try:
            resp = await client.response(timeout=6)
            assert resp.status == 408
            assert_near(timer.elapsed, 1.5)
            assert await client.closed(timeout=2)
        finally:
            dribbler.cancel()
            await asyncio.gather(dribbler, return_exceptions=True)
            client.close()


async def test_connection_that_sends_nothing_is_closed_quietly_at_the_header_timeout():
    app, _ = hostile_app()
    async with running(app, timeout_header=0.5, timeout_keep_alive=30) as server:
        timer = Timed()
        conn = await RawConnection.open(server.port)
        try:
            assert await conn.is_closed_by_peer(timeout=4), "idle new connection never closed"
            assert_near(timer.elapsed, 0.5)
        finally:
            await conn.close()
        await wait_until(lambda: server.connections == 0, timeout=2)


async def test_complete_head_in_time_is_served_despite_dribbling():
    app, _ = hostile_app()
    async with running(app, timeout_header=1.5) as server:
        client = await HostileClient.open(server.port)
        try:
            await client.dribble(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", interval=0.02)  # ~0.6 s
            resp = await client.response()
            assert resp.status == 200 and resp.body == b"ok"
        finally:
            client.close()


async def test_header_deadline_of_a_later_request_runs_from_its_first_byte():
    """On a keep-alive connection the head deadline starts with the request's first byte, not with
    the connection or the previous response; idle time before it is governed by keep-alive."""
    app, _ = hostile_app()
    async with running(app, timeout_header=0.6, timeout_keep_alive=10) as server:
        client = await HostileClient.open(server.port)
        try:
            client.write(request_bytes("GET", "/"))
            assert (await client.response()).status == 200
            await asyncio.sleep(0.8)  # idle past the header timeout, inside keep-alive
            assert not client.is_closed, "idle keep-alive connection closed by the header timeout"
            # A complete second request is served, although the connection is 0.8 s old.
            client.write(request_bytes("GET", "/"))
            assert [r.status for r in await client.responses(2)] == [200, 200]
            await asyncio.sleep(0.3)
            # A third, dribbled: 408 about 0.6 s after its first byte.
            timer = Timed()
            dribbler = asyncio.ensure_future(client.dribble(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100, 0.1))
            try:
                responses = await client.responses(3, timeout=5)
                assert responses[2].status == 408
                assert_near(timer.elapsed, 0.6)
                assert await client.closed()
            finally:
                dribbler.cancel()
                await asyncio.gather(dribbler, return_exceptions=True)
        finally:
            client.close()


async def test_head_begun_in_the_same_read_as_a_complete_request_gets_its_deadline():
    """A complete request and the start of the next arrive in one write, then the client stalls: the
    stalled head is cut off with 408 at ``timeout_header``, not left to the (longer) keep-alive timeout."""
    app, _ = hostile_app()
    async with running(app, timeout_header=0.5, timeout_keep_alive=30) as server:
        client = await HostileClient.open(server.port)
        try:
            timer = Timed()
            client.write(request_bytes("GET", "/") + b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ")
            responses = await client.responses(2, timeout=5)
            assert [r.status for r in responses] == [200, 408]
            assert_near(timer.elapsed, 0.5)
            assert await client.closed()
        finally:
            client.close()


async def test_header_timeout_applies_per_request_not_per_connection():
    """Many quick requests over more than ``timeout_header`` seconds on one connection are fine."""
    app, _ = hostile_app()
    async with running(app, timeout_header=0.3, timeout_keep_alive=10) as server:
        async with raw_connection(server) as conn:
            timer = Timed()
            for _ in range(100):
                await conn.send(request_bytes("GET", "/"))
                assert (await conn.read_final_response()).status == 200
                await asyncio.sleep(0.01)
                if timer.elapsed > 0.7:
                    break
            assert timer.elapsed > 0.6


# --------------------------------------------------------------------------
# Keep-alive idle timeout
# --------------------------------------------------------------------------


async def test_idle_keep_alive_connection_closed_quietly():
    app, _ = hostile_app()
    # 1 s, so the lateness allowed (0.5 s) is roomy on a loaded machine yet a doubled timeout fails.
    async with running(app, timeout_keep_alive=1.0, timeout_header=10) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200
        timer = Timed()
        assert await conn.is_closed_by_peer(timeout=4)  # no bytes: a 408 here would fail
        assert_near(timer.elapsed, 1.0)


async def test_idle_timeout_runs_after_an_answer_from_the_handlers_task():
    """A handler that awaits is answered from its task, after its request was read (the connection
    then goes idle without the pipeline's bookkeeping): the keep-alive timeout must still start."""
    app = App()

    @app.get("/awaits")
    async def awaits(request):
        await asyncio.sleep(0)
        return "ok"

    async with running(app, timeout_keep_alive=1.0, timeout_header=10) as server, raw_connection(server) as conn:
        for _ in range(2):  # the second request finds the connection idle, not handling
            await conn.send(request_bytes("GET", "/awaits"))
            assert (await conn.read_final_response()).status == 200
        timer = Timed()
        assert await conn.is_closed_by_peer(timeout=4)
        assert_near(timer.elapsed, 1.0)


async def test_keep_alive_not_closed_before_its_timeout():
    app, _ = hostile_app()
    async with running(app, timeout_keep_alive=1.0, timeout_header=0.2) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200
        await conn.assert_silent(timeout=0.5)
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200


@pytest.mark.parametrize("timeout,expected", [(None, "timeout=75"), (5, "timeout=5")])
async def test_keep_alive_header_advertises_the_timeout(timeout, expected):
    app, _ = hostile_app()
    settings = {} if timeout is None else {"timeout_keep_alive": timeout}
    async with running(app, **settings) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        resp = await conn.read_final_response()
        assert resp.header("keep-alive") == expected
        await conn.send(request_bytes("GET", "/", headers=[("Connection", "close")]))
        assert not (await conn.read_final_response()).has("keep-alive")


# --------------------------------------------------------------------------
# Connections that close early, and health probes
# --------------------------------------------------------------------------


async def test_eof_without_a_request_closes_at_once():
    app, _ = hostile_app()
    async with running(app, timeout_header=10) as server:
        conn = await RawConnection.open(server.port)
        try:
            await wait_until(lambda: server.connections == 1, timeout=2)
            timer = Timed()
            conn.writer.write_eof()
            assert await conn.is_closed_by_peer(timeout=2)
            assert timer.elapsed < 0.5
        finally:
            await conn.close()
        await wait_until(lambda: server.connections == 0, timeout=1)


async def test_eof_mid_head_closes_at_once():
    app, _ = hostile_app()
    async with running(app, timeout_header=10) as server, raw_connection(server) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        conn.writer.write_eof()
        timer = Timed()
        assert await conn.is_closed_by_peer(timeout=2)
        assert timer.elapsed < 0.5


async def test_health_probes_leak_nothing():
    """Open-and-close TCP probes (plain close and RST) leave no connection, task or log behind."""
    app, _ = hostile_app()
    loop = asyncio.get_running_loop()
    with capture_logs() as logs, loop_exceptions(loop) as contexts:
        async with running(app, timeout_header=30) as server:
            tasks_before = len(asyncio.all_tasks())
            for i in range(200):
                conn = await RawConnection.open(server.port)
                if i % 2:
                    conn.reset()
                else:
                    await conn.close()
            await wait_until(lambda: server.connections == 0, timeout=5, message=f"{server.connections} connections left")
            assert len(asyncio.all_tasks()) <= tasks_before
            async with raw_connection(server) as conn:
                await conn.send(request_bytes("GET", "/"))
                assert (await conn.read_final_response()).status == 200
    assert not contexts, describe_contexts(contexts)
    assert not logs.at_least(logging.WARNING), logs.describe(logs.at_least(logging.WARNING))


# --------------------------------------------------------------------------
# Body timeout
# --------------------------------------------------------------------------


async def test_client_that_stops_mid_body_gets_408():
    app, probe = hostile_app()
    async with running(app, timeout_body=0.5) as server, raw_connection(server) as conn:
        await conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        timer = Timed()
        resp = await conn.read_final_response(timeout=5)
        assert resp.status == 408
        assert "close" in resp.connection_tokens()
        assert_near(timer.elapsed, 0.5)
        assert await conn.is_closed_by_peer()


async def test_chunked_client_that_stops_mid_body_gets_408():
    app, _ = hostile_app()
    async with running(app, timeout_body=0.5) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]) + b"5\r\nhel")
        timer = Timed()
        resp = await conn.read_final_response(timeout=5)
        assert resp.status == 408
        assert_near(timer.elapsed, 0.5)
        assert await conn.is_closed_by_peer()


async def test_slow_but_steady_body_is_not_cut_off():
    """The body timeout is about a stalled client: bytes every 0.2 s keep a 0.4 s timer alive for
    longer than the timeout in total."""
    app, _ = hostile_app()
    async with running(app, timeout_body=0.4) as server:
        client = await HostileClient.open(server.port)
        try:
            client.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
            timer = Timed()
            await client.dribble(b"12345678", interval=0.12)
            resp = await client.response()
            assert resp.status == 200 and resp.body == b'{"size":8}'
            assert timer.elapsed > 0.8
        finally:
            client.close()


async def test_body_timeout_does_not_cut_a_handler_that_is_slow_to_read():
    """A body that is complete is never timed out, however long the handler takes to read it."""
    app, probe = hostile_app()
    async with running(app, timeout_body=0.3) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("POST", "/slow-upload", body=b"z" * 1000))
        await asyncio.sleep(0.6)
        probe.event().set()
        resp = await conn.read_final_response()
        assert resp.status == 200 and resp.body == b'{"size":1000}'


# --------------------------------------------------------------------------
# Write timeout
# --------------------------------------------------------------------------


async def test_client_that_stops_reading_a_stream_is_dropped_and_the_generator_closed():
    app, probe = hostile_app()
    async with running(app, timeout_write=0.5) as server:
        client = await HostileClient.open(server.port, rcvbuf=8192)
        try:
            client.pause_reading()
            client.write(request_bytes("GET", "/endless"))
            timer = Timed()
            await wait_until(lambda: probe.generator_closed, timeout=8, message="stream never closed")
            assert timer.elapsed < 6
            await wait_until(lambda: server.connections == 0, timeout=3)
            assert probe.produced < 64 * 1024 * 1024, probe.produced
        finally:
            client.abort()


async def test_client_that_stops_reading_a_full_body_is_dropped():
    app, _ = hostile_app()
    async with running(app, timeout_write=0.5) as server:
        client = await HostileClient.open(server.port, rcvbuf=8192)
        try:
            client.pause_reading()
            client.write(request_bytes("GET", "/big?n=33554432"))
            await wait_until(lambda: server.connections == 1, timeout=2)
            timer = Timed()
            await wait_until(lambda: server.connections == 0, timeout=8, message="slow reader never dropped")
            assert timer.elapsed < 6
        finally:
            client.abort()


async def test_slow_but_steady_reader_is_not_dropped():
    """A client that reads slowly but keeps reading gets its whole response."""
    app, _ = hostile_app()
    async with running(app, timeout_write=0.5) as server:
        client = await HostileClient.open(server.port, rcvbuf=8192)
        try:
            size = 4 * 1024 * 1024
            client.write(request_bytes("GET", f"/big?n={size}"))
            for _ in range(200):  # read in bursts with short pauses (each shorter than the timeout)
                client.pause_reading()
                await asyncio.sleep(0.2)
                client.resume_reading()
                await asyncio.sleep(0.02)
                if len(client.sink.data) > size:
                    break
            resp = await client.response(timeout=10)
            assert resp.status == 200 and len(resp.body) == size
        finally:
            client.close()


async def test_write_timeout_off():
    app, probe = hostile_app()
    async with running(app, timeout_write=None) as server:
        client = await HostileClient.open(server.port, rcvbuf=8192)
        try:
            client.pause_reading()
            client.write(request_bytes("GET", "/endless"))
            await asyncio.sleep(0.6)
            assert server.connections == 1 and not probe.generator_closed
        finally:
            client.abort()
        await wait_until(lambda: probe.generator_closed, timeout=5)
