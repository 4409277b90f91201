"""Graceful shutdown (signals and ``server.shutdown``) and faults that must stay contained."""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest

from aioserve import App
from tests.support import (
    HostileClient,
    RawConnection,
    ServerProcess,
    Timed,
    capture_logs,
    current_loop_name,
    describe_contexts,
    loop_exceptions,
    raw_connection,
    request_bytes,
    running,
    wait_until,
)
from tests.support.apps import HOSTILE_INFLIGHT_MARKER, SHUTDOWN_MARKER, hostile_app


async def wait_for_lines(proc: ServerProcess, marker: str, count: int, timeout: float = 20) -> list:
    return await asyncio.to_thread(proc.wait_for, marker, timeout, count)


# --------------------------------------------------------------------------
# Signals, against a real process (the server's loop matches the test's)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sig,count", [(signal.SIGTERM, 100), (signal.SIGINT, 10)], ids=["SIGTERM-100", "SIGINT-10"])
async def test_signal_lets_every_in_flight_request_finish(sig, count):
    with ServerProcess(*["tests.support.apps:hostile_served_app", "--port", "0", "--loop", current_loop_name(),
                        "--no-access-log", "--timeout-graceful-shutdown", "20"]) as proc:
        port = (await asyncio.to_thread(proc.wait_listening)).port
        idle = await RawConnection.open(port)
        conns: list[RawConnection] = []
        try:
            await idle.send(request_bytes("GET", "/"))
            assert (await idle.read_final_response()).status == 200
            for i in range(count):
                conn = await RawConnection.open(port)
                conns.append(conn)
                await conn.send(request_bytes("GET", f"/inflight?s=1&i={i}"))
            assert await wait_for_lines(proc, HOSTILE_INFLIGHT_MARKER, count), proc.output
            timer = Timed()
            proc.proc.send_signal(sig)
            # Idle keep-alive connections are closed at once, before in-flight work ends.
            assert await idle.is_closed_by_peer(timeout=3)
            assert timer.elapsed < 0.9, f"idle connection closed only after {timer.elapsed:.2f}s"
            # New connections are no longer accepted.
            with pytest.raises(OSError):
                extra = await RawConnection.open(port)
                await extra.send(request_bytes("GET", "/"))
                await extra.read_final_response(timeout=3)
            # Every accepted request gets its full answer, marked Connection: close.
            responses = await asyncio.gather(*(c.read_final_response(timeout=15) for c in conns))
            for i, resp in enumerate(responses):
                assert resp.status == 200, (i, resp.status, resp.body)
                assert resp.body == f"full-answer-{i}".encode()
                assert "close" in resp.connection_tokens()
            rc = await asyncio.to_thread(proc.wait_exit, 15)
            assert rc == 0, proc.output
            assert proc.count(SHUTDOWN_MARKER) == 1, proc.output
        finally:
            await idle.close()
            for conn in conns:
                await conn.close()


async def test_graceful_timeout_cancels_what_is_left_and_exits_zero():
    with ServerProcess(*["tests.support.apps:hostile_served_app", "--port", "0", "--loop", current_loop_name(),
                        "--no-access-log", "--timeout-graceful-shutdown", "0.5"]) as proc:
        port = (await asyncio.to_thread(proc.wait_listening)).port
        async with raw_connection(port) as conn:
            await conn.send(request_bytes("GET", "/inflight?s=3600"))
            assert await wait_for_lines(proc, HOSTILE_INFLIGHT_MARKER, 1)
            timer = Timed()
            proc.proc.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(proc.wait_exit, 15)
            assert rc == 0, proc.output
            assert 0.3 <= timer.elapsed <= 4.0, timer.elapsed
            assert proc.count(SHUTDOWN_MARKER) == 1, proc.output
            assert await conn.is_closed_by_peer(timeout=2)


# --------------------------------------------------------------------------
# server.shutdown(timeout) in-process
# --------------------------------------------------------------------------


async def test_shutdown_closes_idle_at_once_finishes_in_flight_and_runs_hooks():
    app, probe = hostile_app()
    hooks: list[str] = []

    @app.on_shutdown
    async def hook():
        hooks.append("ran")

    async with running(app) as server:
        idle = await RawConnection.open(server.port)
        busy = await RawConnection.open(server.port)
        fresh = await RawConnection.open(server.port)  # connected, never sent anything
        try:
            await idle.send(request_bytes("GET", "/"))
            assert (await idle.read_final_response()).status == 200
            await busy.send(request_bytes("GET", "/sleep?s=0.8"))
            await wait_until(lambda: probe.started >= 2, timeout=3)
            timer = Timed()
            shutdown = asyncio.ensure_future(server.shutdown(timeout=10))
            assert await idle.is_closed_by_peer(timeout=2)
            assert await fresh.is_closed_by_peer(timeout=2)
            assert timer.elapsed < 0.5
            resp = await busy.read_final_response(timeout=5)
            assert resp.status == 200 and resp.body == b"slept"
            assert "close" in resp.connection_tokens()
            await asyncio.wait_for(shutdown, 10)
            assert 0.6 <= timer.elapsed < 3
            assert hooks == ["ran"]
        finally:
            for conn in (idle, busy, fresh):
                await conn.close()


async def test_shutdown_timeout_cancels_hung_handlers():
    app, probe = hostile_app()
    hooks: list[str] = []

    @app.on_shutdown
    async def hook():
        hooks.append("ran")

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/hang"))
        await wait_until(lambda: probe.started == 1, timeout=3)
        timer = Timed()
        await asyncio.wait_for(server.shutdown(timeout=0.5), 10)
        assert 0.4 <= timer.elapsed < 3, timer.elapsed
        assert probe.generator_closed, "the hung handler was not cancelled"
        assert hooks == ["ran"]
        assert await conn.is_closed_by_peer(timeout=2)


async def test_request_arriving_during_drain_on_a_busy_connection_is_not_started():
    """Once draining, a connection answers what it has and closes; a pipelined request that
    arrives after the drain began may be refused, but never left hanging."""
    app, probe = hostile_app()
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/sleep?s=0.5"))
        await wait_until(lambda: probe.started == 1, timeout=3)
        shutdown = asyncio.ensure_future(server.shutdown(timeout=5))
        await asyncio.sleep(0.05)
        await conn.send_ignoring_errors(request_bytes("GET", "/"))
        first = await conn.read_final_response(timeout=5)
        assert first.status == 200 and "close" in first.connection_tokens()
        assert await conn.is_closed_by_peer(timeout=3)
        await asyncio.wait_for(shutdown, 10)


# --------------------------------------------------------------------------
# Faults stay contained
# --------------------------------------------------------------------------


async def test_handler_that_raises_takes_nothing_down():
    app, _ = hostile_app()
    async with running(app) as server, raw_connection(server) as conn, raw_connection(server) as other:
        for _ in range(3):
            await conn.send(request_bytes("GET", "/boom"))
            assert (await conn.read_final_response()).status == 500
        await conn.send(request_bytes("GET", "/"))  # same connection still usable
        assert (await conn.read_final_response()).status == 200
        await other.send(request_bytes("GET", "/"))
        assert (await other.read_final_response()).status == 200


async def test_hung_handler_does_not_block_other_clients():
    app, probe = hostile_app()
    async with running(app) as server, raw_connection(server) as hung:
        await hung.send(request_bytes("GET", "/hang"))
        await wait_until(lambda: probe.started == 1, timeout=3)
        for _ in range(5):
            async with raw_connection(server) as conn:
                await conn.send(request_bytes("GET", "/"))
                assert (await conn.read_final_response(timeout=2)).status == 200
        await asyncio.wait_for(server.shutdown(timeout=0.2), 5)


async def test_handler_raising_cancelled_error_is_answered_or_closed():
    """A handler whose own work gets cancelled must not leave its client waiting forever."""
    app, _ = hostile_app()
    loop = asyncio.get_running_loop()
    with loop_exceptions(loop) as contexts:
        async with running(app) as server:
            client = await HostileClient.open(server.port)
            try:
                client.write(request_bytes("GET", "/cancelled"))
                await wait_until(lambda: client.is_closed or b"\r\n\r\n" in client.sink.data, timeout=3,
                                 message="a cancelled handler left its connection hanging")
                if client.sink.data:
                    assert (await client.response()).status >= 500
            finally:
                client.close()
            async with raw_connection(server) as conn:
                await conn.send(request_bytes("GET", "/"))
                assert (await conn.read_final_response()).status == 200
    assert not contexts, describe_contexts(contexts)


async def test_handler_cancelled_by_client_disconnect_is_quiet():
    app, probe = hostile_app()
    loop = asyncio.get_running_loop()
    with capture_logs() as logs, loop_exceptions(loop) as contexts:
        async with running(app) as server:
            conn = await RawConnection.open(server.port)
            await conn.send(request_bytes("GET", "/sleep?s=0.3"))
            await wait_until(lambda: probe.started == 1, timeout=3)
            conn.reset()
            await asyncio.sleep(0.5)
            async with raw_connection(server) as other:
                await other.send(request_bytes("GET", "/"))
                assert (await other.read_final_response()).status == 200
    assert not contexts, describe_contexts(contexts)
    assert not logs.at_least(logging.ERROR), logs.describe(logs.at_least(logging.ERROR))


@pytest.mark.parametrize("scenario", ["reset-mid-head", "close-mid-body", "reset-mid-body", "reset-mid-stream",
                                      "reset-mid-big-body", "close-before-response", "reset-pipelined"])
async def test_client_disconnects_log_nothing(scenario):
    app, probe = hostile_app()
    loop = asyncio.get_running_loop()
    with capture_logs() as logs, loop_exceptions(loop) as contexts:
        async with running(app, timeout_write=None) as server:
            client = await HostileClient.open(server.port, rcvbuf=8192)
            if scenario == "reset-mid-head":
                client.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b")
            elif scenario in ("close-mid-body", "reset-mid-body"):
                client.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            elif scenario == "reset-mid-stream":
                client.pause_reading()
                client.write(request_bytes("GET", "/endless"))
                await wait_until(lambda: probe.produced > 1024 * 1024, timeout=3)
            elif scenario == "reset-mid-big-body":
                client.pause_reading()
                client.write(request_bytes("GET", "/big?n=16777216"))
            elif scenario == "close-before-response":
                client.write(request_bytes("GET", "/sleep?s=0.2"))
            elif scenario == "reset-pipelined":
                client.write(request_bytes("GET", "/sleep?s=0.2") * 5)
            await asyncio.sleep(0.1)
            if scenario.startswith("close"):
                client.close()
            else:
                sock = client.transport.get_extra_info("socket")
                import socket as _socket
                import struct

                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.abort()
            await wait_until(lambda: server.connections == 0, timeout=3)
            await asyncio.sleep(0.25)  # let handlers still running after the disconnect finish
            async with raw_connection(server) as conn:
                await conn.send(request_bytes("GET", "/"))
                assert (await conn.read_final_response()).status == 200
    assert not contexts, describe_contexts(contexts)
    errors = logs.at_least(logging.ERROR)
    assert not errors, logs.describe(errors)
    if scenario == "reset-mid-stream":
        assert probe.generator_closed
