"""The fast paths of file answers: a small file answered inline (no task), the precompressed-sibling
cache, and ``os.sendfile`` on the socket for loops without a native ``loop.sendfile`` (uvloop).

Every test runs on both loops; the bytes must be the same whichever path sends them.
"""
from __future__ import annotations

import asyncio
import gzip
import os

import pytest

from aioserve import App, FileResponse
from aioserve import sendfile as sendfile_module
from aioserve import staticfiles
from aioserve.connection import Connection
from tests.support import http_client, raw_connection, request_bytes, running, wait_until

KiB, MiB = 1024, 2**20
SMALL = os.urandom(64 * KiB)  # exactly INLINE_READ: the largest body answered inline
LARGE = os.urandom(3 * MiB + 777)


def native_sendfile() -> bool:
    return type(asyncio.get_running_loop()).sendfile is not asyncio.AbstractEventLoop.sendfile


@pytest.fixture
def streams(monkeypatch):
    """The responses that went through the connection's streaming task."""
    seen: list[object] = []
    original = Connection._stream

    async def spy(self, ex, response):
        seen.append(response)
        return await original(self, ex, response)

    monkeypatch.setattr(Connection, "_stream", spy)
    return seen


@pytest.fixture
def fd_sends(monkeypatch):
    """The (function, count) of every call made on the socket by the uvloop path."""
    calls: list[tuple[str, int]] = []
    original = sendfile_module._SocketWriter._call

    async def spy(self, func, *args):
        done = await original(self, func, *args)
        calls.append((func.__name__, done))
        return done

    monkeypatch.setattr(sendfile_module._SocketWriter, "_call", spy)
    return calls


def open_fds() -> int:
    """Sockets and files open in this process (not what the loop reserves for itself: libuv's /dev/null)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith("socket:") or target.endswith(".bin")
    return count


async def test_small_file_is_answered_inline_and_closed(tmp_path, streams):
    (tmp_path / "small.bin").write_bytes(SMALL)
    (tmp_path / "one-more.bin").write_bytes(SMALL + b"x")
    made: list[FileResponse] = []
    app = App()
    app.static("/f", str(tmp_path))

    @app.get("/handler")
    async def handler(request):
        made.append(FileResponse(tmp_path / "small.bin"))
        return made[-1]

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/f/small.bin")
        assert r.status_code == 200 and r.content == SMALL
        r = await client.head("/f/small.bin")
        assert r.headers["content-length"] == str(len(SMALL)) and r.content == b""
        r = await client.get("/f/small.bin", headers={"range": "bytes=0-9,100-109"})
        assert r.status_code == 206 and SMALL[:10] in r.content and SMALL[100:110] in r.content
        r = await client.get("/handler")
        assert r.content == SMALL and made[0].fd is None  # closed by the time the answer is out
        assert streams == []  # no task: all of them were answered inline
        r = await client.get("/f/one-more.bin")  # one byte over: the streaming path
        assert r.content == SMALL + b"x" and len(streams) == 1


async def test_small_file_that_shrank_is_a_500_not_a_misframed_answer(tmp_path):
    (tmp_path / "s.bin").write_bytes(b"s" * 1000)
    app = App()

    @app.get("/s")
    async def shrinking(request):
        response = FileResponse(tmp_path / "s.bin")
        os.truncate(tmp_path / "s.bin", 10)
        return response

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/s")
        assert r.status_code == 500


async def test_sibling_absence_is_cached_until_the_directory_changes(tmp_path, monkeypatch):
    body = b"console.log(1);\n" * 100
    (tmp_path / "app.js").write_bytes(body)
    old = 1_600_000_000
    os.utime(tmp_path, (old, old))  # settled: its mtime is older than SETTLE_NS
    opened: list[str] = []
    original = staticfiles.StaticFiles._open_sibling

    def spy(self, segments, name, parent):
        opened.append(name)
        return original(self, segments, name, parent)

    monkeypatch.setattr(staticfiles.StaticFiles, "_open_sibling", spy)
    app = App()
    app.static("/s", str(tmp_path))
    async with running(app) as server, http_client(server) as client:
        for _ in range(3):
            r = await client.get("/s/app.js", headers={"accept-encoding": "gzip"})
            assert "content-encoding" not in r.headers and r.content == body
        assert len(opened) == 3  # looked up once (3 names), then remembered
        (tmp_path / "app.js.gz").write_bytes(gzip.compress(body))  # changes the directory's mtime
        r = await client.get("/s/app.js", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and r.content == body
        assert "Accept-Encoding" in r.headers["vary"]


async def test_unsettled_directory_is_never_cached(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("a")  # the directory was modified just now
    opened: list[str] = []
    original = staticfiles.StaticFiles._open_sibling

    def spy(self, segments, name, parent):
        opened.append(name)
        return original(self, segments, name, parent)

    monkeypatch.setattr(staticfiles.StaticFiles, "_open_sibling", spy)
    app = App()
    app.static("/s", str(tmp_path))
    async with running(app) as server, http_client(server) as client:
        for _ in range(2):
            assert (await client.get("/s/a.txt")).text == "a"
    assert len(opened) == 6


async def test_sibling_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(staticfiles, "ALONE_CACHE", 2)
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(str(i))
    old = 1_600_000_000
    os.utime(tmp_path, (old, old))
    files = staticfiles.StaticFiles("/s", tmp_path)
    app = App()
    files.install(app)
    async with running(app) as server, http_client(server) as client:
        for i in range(5):
            assert (await client.get(f"/s/{i}.txt")).text == str(i)
            assert len(files._alone) <= 2


async def test_large_file_goes_through_the_socket_on_uvloop(tmp_path, fd_sends):
    (tmp_path / "big.bin").write_bytes(LARGE)
    app = App()
    app.static("/f", str(tmp_path))
    (tmp_path / "small.txt").write_text("s")
    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/f/small.txt")).text == "s"  # the connection is open: count from here
        before = open_fds()
        r = await client.get("/f/big.bin")
        assert r.status_code == 200 and r.content == LARGE
        r = await client.get("/f/big.bin", headers={"range": "bytes=0-9,-100000"})
        assert r.status_code == 206 and LARGE[:10] in r.content and r.content.count(LARGE[-100000:]) == 1
        r = await client.get("/f/big.bin")  # the connection is still good after both
        assert r.content == LARGE
        await wait_until(lambda: open_fds() <= before, timeout=5, message="a descriptor was left open")
    if native_sendfile():
        assert fd_sends == []  # asyncio: loop.sendfile
    else:
        assert sum(n for f, n in fd_sends if f == "sendfile") == 2 * len(LARGE) + 10 + 100000
        assert max(n for f, n in fd_sends if f == "sendfile") <= sendfile_module.MAX_SLICE
        assert any(f == "write" for f, _ in fd_sends)  # the multipart boundaries


async def test_disconnect_on_uvloop_path_closes_file_and_duplicate(tmp_path, fd_sends):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(256 * MiB)  # sparse
    made: list[FileResponse] = []
    app = App()

    @app.get("/big")
    async def download(request):
        made.append(FileResponse(big))
        return made[-1]

    async with running(app) as server:
        before = open_fds()
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/big"))
            assert (await conn.read_some()).startswith(b"HTTP/1.1 200")
            await conn.read_exactly(MiB)
            conn.reset()
        await wait_until(lambda: made[0].fd is None, timeout=5, message="the file was not closed")
        await wait_until(lambda: server.connections == 0, timeout=5)
        await wait_until(lambda: open_fds() <= before, timeout=5, message="a descriptor was left open")
    assert sum(n for f, n in fd_sends if f == "sendfile") < 256 * MiB
