"""Flow control and memory: streamed responses follow the reader, uploads follow the handler,
full bodies are not copied, and a big streamed upload runs in constant memory."""

from __future__ import annotations

import asyncio
import os

from aioserve import App, Response
from tests.support import HostileClient, RssSampler, raw_connection, request_bytes, running, wait_until
from tests.support.apps import hostile_app

MiB = 1024 * 1024


async def settle(read, timeout: float = 4.0, interval: float = 0.15) -> int:
    """Wait until ``read()`` stops changing (two equal samples in a row); return its value."""
    last = read()
    for _ in range(int(timeout / interval) + 1):
        await asyncio.sleep(interval)
        now = read()
        if now == last:
            return now
        last = now
    return last


# --------------------------------------------------------------------------
# Streamed responses: the generator is suspended while the client does not read
# --------------------------------------------------------------------------


async def test_streamed_response_produces_no_faster_than_the_client_reads():
    app, probe = hostile_app()
    async with running(app, timeout_write=None) as server:
        client = await HostileClient.open(server.port, rcvbuf=16384)
        try:
            client.pause_reading()
            client.write(request_bytes("GET", "/endless"))
            await wait_until(lambda: probe.produced > 0, timeout=3)
            stalled_at = await settle(lambda: probe.produced)
            # Only socket buffers' worth was produced, out of a possible 1 GiB.
            assert stalled_at < 16 * MiB, stalled_at
            assert not probe.generator_closed
            # The client reads again: production resumes.
            client.resume_reading()
            await wait_until(lambda: probe.produced > stalled_at + 8 * MiB, timeout=10)
            client.pause_reading()
            second_stall = await settle(lambda: probe.produced)
            received = len(client.sink.data)
            assert second_stall - received < 16 * MiB, (second_stall, received)
        finally:
            client.abort()
        await wait_until(lambda: probe.generator_closed, timeout=5)


async def test_streamed_response_is_complete_when_read_slowly():
    app, probe = hostile_app()
    async with running(app, timeout_write=5) as server:
        client = await HostileClient.open(server.port, rcvbuf=16384)
        try:
            n = 4 * MiB
            client.write(request_bytes("GET", f"/endless?n={n}"))
            for _ in range(100):
                client.pause_reading()
                await asyncio.sleep(0.05)
                client.resume_reading()
                await asyncio.sleep(0.01)
                if client.sink.data.endswith(b"0\r\n\r\n"):
                    break
            resp = await client.response(timeout=10)
            assert resp.status == 200 and resp.chunked and len(resp.body) == n
        finally:
            client.close()


# --------------------------------------------------------------------------
# Full-body responses: handed to the transport once, never copied
# --------------------------------------------------------------------------


class RecordingTransport:
    """Forwards everything to the real transport, remembering what was written."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.writes: list = []

    def write(self, data) -> None:
        self.writes.append(data)
        self._inner.write(data)

    def writelines(self, items) -> None:
        items = list(items)
        self.writes.extend(items)
        self._inner.writelines(items)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def written_without_copy(writes: list, body: bytes) -> bool:
    """The body reached the transport as itself, or as memoryview slices of it covering it once."""
    if any(data is body for data in writes):
        return True
    views = [data for data in writes if isinstance(data, memoryview) and data.obj is body]
    return bool(views) and sum(v.nbytes for v in views) == len(body)


async def _recorded_exchange(app: App, path: str) -> tuple[list, bytes]:
    async with running(app, timeout_write=None) as server, raw_connection(server) as conn:
        await wait_until(lambda: server.connections == 1, timeout=2)
        (protocol,) = list(server.state.connections)
        recorder = RecordingTransport(protocol.transport)
        protocol.transport = recorder
        await conn.send(request_bytes("GET", path))
        resp = await conn.read_final_response(timeout=10)
        assert resp.status == 200
        return recorder.writes, resp.body


async def test_full_body_response_is_handed_to_the_transport_without_a_copy():
    body = os.urandom(4 * MiB)
    app = App()

    @app.get("/payload")
    async def payload(request):
        await asyncio.sleep(0)
        return Response(body, content_type="application/octet-stream")

    @app.get("/raw")
    async def raw(request):
        return body

    for path in ("/payload", "/raw"):
        writes, received = await _recorded_exchange(app, path)
        assert received == body
        assert written_without_copy(writes, body), (
            f"{path}: the {len(body)}-byte body reached the transport only inside "
            f"{[type(w).__name__ + ':' + str(len(w)) for w in writes]} (copied)"
        )
        assert sum(len(w) for w in writes) < len(body) + 4096, "body written more than once"


# --------------------------------------------------------------------------
# Uploads: reading follows the handler
# --------------------------------------------------------------------------


async def test_upload_to_a_handler_that_has_not_started_reading_is_not_buffered():
    app, probe = hostile_app()
    async with running(app, timeout_body=30) as server, raw_connection(server) as conn:
        size = 64 * MiB
        conn.writer.transport.set_write_buffer_limits(high=256 * 1024)
        writer = asyncio.ensure_future(conn.send_ignoring_errors(
            b"POST /slow-upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"u" * size, piece=MiB))
        try:
            await asyncio.sleep(1.0)
            # The handler is parked: the server paused reading, so the client's writes stall.
            assert not writer.done(), "64 MiB were accepted while nobody read them"
            assert probe.consumed == 0
        finally:
            probe.event().set()
        resp = await conn.read_final_response(timeout=30)
        assert await asyncio.wait_for(writer, 30)
        assert resp.status == 200 and resp.body == b'{"size":%d}' % size


async def test_streamed_upload_runs_in_constant_memory():
    """A large upload through ``request.stream()`` to a handler that discards it: the process's
    RSS (client and server together) grows by far less than the upload."""
    size = int(os.environ.get("AIOSERVE_UPLOAD_MIB", "1024")) * MiB
    app, probe = hostile_app()
    piece = b"\x00" * MiB
    async with running(app) as server, raw_connection(server) as conn:
        with RssSampler() as rss:
            await conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // MiB):
                conn.writer.write(piece)
                await asyncio.wait_for(conn.writer.drain(), 10)
            resp = await conn.read_final_response(timeout=30)
        assert resp.status == 200 and resp.body == b'{"size":%d}' % size
        assert rss.growth_mib < 48, f"RSS grew by {rss.growth_mib:.1f} MiB for a {size // MiB} MiB upload"


async def test_chunked_streamed_upload_runs_in_constant_memory():
    size = 64 * MiB
    app, probe = hostile_app()
    chunk = b"%x\r\n%s\r\n" % (MiB, b"\x01" * MiB)
    async with running(app) as server, raw_connection(server) as conn:
        with RssSampler() as rss:
            await conn.send(request_bytes("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]))
            for _ in range(size // MiB):
                conn.writer.write(chunk)
                await asyncio.wait_for(conn.writer.drain(), 10)
            await conn.send(b"0\r\n\r\n")
            resp = await conn.read_final_response(timeout=30)
        assert resp.status == 200 and resp.body == b'{"size":%d}' % size
        assert rss.growth_mib < 48, f"RSS grew by {rss.growth_mib:.1f} MiB for a {size // MiB} MiB upload"
