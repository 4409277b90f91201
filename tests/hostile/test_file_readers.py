"""Clients that read a file response slowly or not at all, on both loops (sendfile on asyncio, bounded
reads on uvloop): a stalled reader is dropped after ``timeout_write`` and its file closed; a slow but
steady one gets the whole file."""
from __future__ import annotations

import asyncio

from aioserve import App, FileResponse
from tests.support import HostileClient, Timed, request_bytes, running, wait_until

MiB = 2**20


def file_app(path) -> tuple[App, list[FileResponse]]:
    app = App()
    made: list[FileResponse] = []

    @app.get("/file")
    async def file(request):
        made.append(FileResponse(path))
        return made[-1]

    return app, made


async def test_client_that_stops_reading_a_file_is_dropped_and_the_file_closed(tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(512 * MiB)  # sparse; far more than any socket buffer
    app, made = file_app(path)
    async with running(app, timeout_write=0.5) as server:
        client = await HostileClient.open(server.port, rcvbuf=8192)
        try:
            client.pause_reading()
            client.write(request_bytes("GET", "/file"))
            await wait_until(lambda: server.connections == 1, timeout=2)
            timer = Timed()
            await wait_until(lambda: server.connections == 0, timeout=8, message="stalled reader never dropped")
            assert timer.elapsed < 6
            await wait_until(lambda: made[0].fd is None, timeout=2, message="the file was not closed")
        finally:
            client.abort()


async def test_slow_but_steady_reader_of_a_file_gets_all_of_it(tmp_path):
    size = 4 * MiB
    path = tmp_path / "steady.bin"
    path.write_bytes(bytes(range(256)) * (size // 256))
    app, _ = file_app(path)
    async with running(app, timeout_write=0.5) as server:
        client = await HostileClient.open(server.port, rcvbuf=8192)
        try:
            client.write(request_bytes("GET", "/file"))
            for _ in range(300):  # read in bursts with short pauses (each shorter than the timeout)
                client.pause_reading()
                await asyncio.sleep(0.2)
                client.resume_reading()
                await asyncio.sleep(0.02)
                if len(client.sink.data) > size:
                    break
            resp = await client.response(timeout=10)
            assert resp.status == 200 and resp.body == path.read_bytes()
        finally:
            client.close()
