"""Load shedding: 503 + Retry-After past the in-flight limit, at once, then accepting again."""
from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from aioserve import App
from aioserve.cli import build_parser, settings_from_args
from aioserve.shedding import AdaptiveLimit
from tests.support import RawConnection, raw_get, request_bytes, running, wait_until


def slow_app(**kw):
    app = App(**kw)
    gate = asyncio.Event()
    entered = []

    @app.get("/hold")
    async def hold(request):
        entered.append(1)
        await gate.wait()
        return "done"

    @app.post("/upload")
    async def upload(request):
        return {"size": len(await request.body())}

    @app.get("/health", shed=False)
    async def health(request):
        return "ok"

    return app, gate, entered


async def test_sheds_past_the_limit_and_accepts_again_after():
    app, gate, entered = slow_app(limit_in_flight=2, server_timing=True)
    async with running(app) as server:
        holders = [await RawConnection.open(server.port) for _ in range(2)]
        extra = await RawConnection.open(server.port)
        try:
            for c in holders:
                c.write(request_bytes("GET", "/hold"))
            await wait_until(lambda: len(entered) == 2)
            assert server.state.observer.in_flight == 2
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            reply = await extra.request("GET", "/hold")
            assert reply.status == 503
            assert reply.header("retry-after") == "1"
            assert loop.time() - t0 < 0.5
            # server time of the refusal, as the server reports it: well under a millisecond
            assert float(reply.header("server-timing").split("dur=")[1]) < 1.0
            assert len(entered) == 2  # the shed request never reached a handler
            # exempt routes still answer
            assert (await extra.request("GET", "/health")).status == 200
            gate.set()
            for c in holders:
                assert (await c.read_response()).body == b"done"
            await wait_until(lambda: server.state.observer.in_flight == 0)
            reply = await extra.request("GET", "/hold")  # the same keep-alive connection is served again
            assert (reply.status, reply.body) == (200, b"done")
        finally:
            for c in [*holders, extra]:
                await c.close()


async def test_shed_before_the_body_is_read():
    app, gate, entered = slow_app(limit_in_flight=1)
    async with running(app) as server:
        holder = await RawConnection.open(server.port)
        other = await RawConnection.open(server.port)
        try:
            holder.write(request_bytes("GET", "/hold"))
            await wait_until(lambda: len(entered) == 1)
            # Expect: 100-continue: the client waits for our go-ahead; we refuse instead, and close.
            other.write(request_bytes("POST", "/upload", headers={"Expect": "100-continue", "Content-Length": "5"}))
            reply = await other.read_response()
            assert reply.status == 503
            assert reply.header("connection") == "close"
            gate.set()
            assert (await holder.read_response()).status == 200
        finally:
            await holder.close()
            await other.close()


async def test_server_setting_overrides_the_app_and_disconnects_release_slots():
    app, gate, entered = slow_app(limit_in_flight=100)
    async with running(app, limit_in_flight=1) as server:
        assert server.state.observer.limit == 1
        c = await RawConnection.open(server.port)
        c.write(request_bytes("GET", "/hold"))
        await wait_until(lambda: server.state.observer.in_flight == 1)
        assert (await raw_get(server.port, "/hold")).status == 503
        # The client gives up with a reset (a plain close is a half-close: it still wants the answer).
        sock = c.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.writer.transport.abort()
        await wait_until(lambda: server.state.observer.in_flight == 0)
        gate.set()
        assert (await raw_get(server.port, "/hold")).status == 200


async def test_idle_keep_alive_connections_are_not_load():
    app, gate, entered = slow_app(limit_in_flight=1)
    gate.set()
    async with running(app) as server:
        idle = [await RawConnection.open(server.port) for _ in range(5)]
        try:
            for c in idle:
                assert (await c.request("GET", "/health")).status == 200
            assert server.state.observer.in_flight == 0
            assert (await raw_get(server.port, "/hold")).status == 200
        finally:
            for c in idle:
                await c.close()


def test_cli_flag():
    args = build_parser().parse_args(["mod:app", "--limit-in-flight", "64"])
    assert settings_from_args(args)["limit_in_flight"] == 64
    assert settings_from_args(build_parser().parse_args(["mod:app"]))["limit_in_flight"] is None


def test_invalid_limits():
    with pytest.raises(ValueError):
        App(limit_in_flight=0)
    from aioserve.config import Config

    with pytest.raises(ValueError):
        Config.from_settings(limit_in_flight=0)


def test_adaptive_limit_decreases_on_breach_and_recovers():
    limit = AdaptiveLimit(100)
    limit.peak = 80
    for _ in range(100):
        limit.record("/score", 0.010, 0.050)  # every answer 5x over a 10 ms budget
    assert limit.update() == 56  # 0.7 x min(100, peak 80)
    for _ in range(100):
        limit.record("/score", 0.010, 0.0008)  # calm: far under half the budget
    assert limit.update() == 61  # +10%
    for _ in range(5):
        limit.record("/score", 0.010, 0.5)  # too few samples to judge
    assert limit.update() == 67
    for _ in range(50):
        for _ in range(100):
            limit.record("/score", 0.010, 0.0008)
        limit.update()
    assert limit.current == 100  # never past the configured ceiling


async def test_adaptive_shedding_runs_with_the_server():
    app, gate, entered = slow_app(adaptive_shedding=True, deadline=0.5)
    gate.set()
    async with running(app) as server:
        assert server.state.observer.adaptive is not None
        for _ in range(3):
            assert (await raw_get(server.port, "/hold")).status == 200


@pytest.mark.parametrize("batch", [0, 1, 64])
async def test_accept_batch_setting(batch):
    from aioserve.accept import BatchAcceptor

    app = App()

    @app.get("/")
    async def index(request):
        return "ok"

    async with running(app, accept_batch=batch) as server:
        assert isinstance(server._server, BatchAcceptor) == bool(batch)
        clients = [await RawConnection.open(server.port) for _ in range(20)]  # queued at once
        try:
            replies = await asyncio.gather(*(c.request("GET", "/") for c in clients))
            assert all(r.status == 200 for r in replies)
        finally:
            for c in clients:
                await c.close()


def test_cli_accept_batch():
    assert settings_from_args(build_parser().parse_args(["m:a", "--accept-batch", "0"]))["accept_batch"] == 0


async def test_sheds_cpu_bound_handlers_that_never_await():
    """A handler with no await could run inline, as its head is parsed, and the queue would hide in
    the socket buffers where shedding cannot see it. With a limit set, every head is admitted or
    refused first: six pipelined requests in one read, limit 2, give two answers and four 503s."""
    app = App(limit_in_flight=2)

    @app.get("/burn")
    async def burn(request):
        return str(sum(range(20000)))  # CPU only, no await

    async with running(app) as server:
        client = await RawConnection.open(server.port)
        try:
            for _ in range(6):
                client.write(request_bytes("GET", "/burn"))
            statuses = [(await client.read_response()).status for _ in range(6)]
        finally:
            await client.close()
    assert statuses == [200, 200, 503, 503, 503, 503]
