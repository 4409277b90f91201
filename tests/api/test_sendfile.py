"""File bodies through ``loop.sendfile``: used on asyncio's loop over plain TCP, never on uvloop (which
has no ``loop.sendfile``) nor over TLS; the bytes are the same either way.

Every test runs on both loops; ``sendfile_calls`` records the loop's ``sendfile`` calls, so each test
asserts which path its loop took.
"""
from __future__ import annotations

import asyncio
import os
import ssl

import pytest

import aioserve
from aioserve import App, FileResponse
from aioserve.sendfile import FIRST_SLICE, MAX_SLICE
from tests.support import HOST, http_client, raw_connection, request_bytes, running, wait_until

MiB = 2**20
BODY = os.urandom(3 * MiB + 12345)  # several slices, and not a multiple of any of them


def loop_has_sendfile() -> bool:
    return type(asyncio.get_running_loop()).sendfile is not asyncio.AbstractEventLoop.sendfile


@pytest.fixture
async def sendfile_calls(monkeypatch):
    """The (offset, count) of every loop.sendfile call made while the test runs."""
    loop = asyncio.get_running_loop()
    calls: list[tuple[int, int]] = []
    original = loop.sendfile

    async def spy(transport, file, offset=0, count=None, *, fallback=True):
        calls.append((offset, count))
        return await original(transport, file, offset, count, fallback=fallback)

    monkeypatch.setattr(loop, "sendfile", spy)
    return calls


@pytest.fixture
def files(tmp_path):
    (tmp_path / "big.bin").write_bytes(BODY)
    (tmp_path / "small.txt").write_bytes(b"x" * 1024)
    return tmp_path


def file_app(root) -> tuple[App, list[FileResponse]]:
    app = App()
    app.static("/f", str(root))
    made: list[FileResponse] = []

    @app.get("/shrinking")
    async def shrinking(request):
        response = FileResponse(root / "shrink.bin")
        made.append(response)
        os.truncate(root / "shrink.bin", 1000)  # measured at 2 MiB, now 1,000 bytes
        return response

    return app, made


async def test_get_sends_the_whole_file_through_sendfile_where_native(files, sendfile_calls):
    async with running(file_app(files)[0]) as server, http_client(server) as client:
        r = await client.get("/f/big.bin")
        assert r.status_code == 200 and r.content == BODY
        assert r.headers["content-length"] == str(len(BODY))
        r = await client.get("/f/small.txt")  # the connection is reused after a sendfile answer
        assert r.status_code == 200 and r.content == b"x" * 1024
    if loop_has_sendfile():
        assert sendfile_calls, "asyncio's loop has native sendfile for TCP: it must be used"
        assert max(count for _, count in sendfile_calls) <= MAX_SLICE
        assert sum(count for _, count in sendfile_calls) == len(BODY)  # a small file is read on the loop
    else:
        assert sendfile_calls == []  # uvloop: the bounded reads


async def test_head_sends_no_body(files, sendfile_calls):
    async with running(file_app(files)[0]) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("HEAD", "/f/big.bin"))
        resp = await conn.read_response("HEAD")
        assert resp.status == 200 and resp.header("content-length") == str(len(BODY)) and resp.body == b""
        await conn.send(request_bytes("GET", "/f/small.txt"))  # nothing stray precedes the next answer
        resp = await conn.read_response()
        assert resp.status == 200 and resp.body == b"x" * 1024
    assert all(count == 1024 for _, count in sendfile_calls)


async def test_ranges_and_multipart_mix_written_bytes_with_file_slices(files, sendfile_calls):
    async with running(file_app(files)[0]) as server, http_client(server) as client:
        r = await client.get("/f/big.bin", headers={"range": "bytes=0-0"})
        assert r.status_code == 206 and r.content == BODY[:1]
        r = await client.get("/f/big.bin", headers={"range": "bytes=-100"})
        assert r.status_code == 206 and r.content == BODY[-100:]
        r = await client.get("/f/big.bin", headers={"range": f"bytes=10-19,{2 * MiB}-{3 * MiB}"})
        assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges; boundary=")
        assert int(r.headers["content-length"]) == len(r.content)
        boundary = r.headers["content-type"].split("boundary=")[1].encode()
        parts = r.content.split(b"--" + boundary)
        assert parts[0] == b"" and parts[-1] == b"--\r\n" and len(parts) == 4
        assert parts[1].endswith(b"\r\n\r\n" + BODY[10:20] + b"\r\n")
        assert parts[2].endswith(b"\r\n\r\n" + BODY[2 * MiB:3 * MiB + 1] + b"\r\n")
    if loop_has_sendfile():
        assert (10, 10) in sendfile_calls  # beside a large part
        assert not any(offset == 0 or count == 100 for offset, count in sendfile_calls)  # small: read


async def test_a_slice_the_kernel_refuses_goes_through_reads(files, monkeypatch):
    loop = asyncio.get_running_loop()
    original = loop.sendfile
    calls = []

    async def refuse_the_second(transport, file, offset=0, count=None, *, fallback=True):
        calls.append(offset)
        if len(calls) == 2:
            raise asyncio.SendfileNotAvailableError("os.sendfile call failed")
        return await original(transport, file, offset, count, fallback=fallback)

    monkeypatch.setattr(loop, "sendfile", refuse_the_second)
    async with running(file_app(files)[0]) as server, http_client(server) as client:
        r = await client.get("/f/big.bin")
        assert r.status_code == 200 and r.content == BODY
        r = await client.get("/f/big.bin", headers={"range": "bytes=0-9,-100000"})
        assert r.status_code == 206 and BODY[:10] in r.content and r.content.count(BODY[-100000:]) == 1
    if loop_has_sendfile():  # the first answer: one slice sent, the second refused; then both ranges
        assert calls[:4] == [0, FIRST_SLICE, 0, len(BODY) - 100000]
    else:
        assert calls == []


async def test_a_file_that_shrank_cuts_the_connection_and_closes_the_file(files):
    (files / "shrink.bin").write_bytes(b"s" * 2 * MiB)
    app, made = file_app(files)
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/shrinking"))
        data = b""
        for _ in range(100):
            piece = await conn.read_some()
            if not piece:
                break
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % (2 * MiB) in head
        assert body == b"s" * 1000  # what there was, then the connection closes: never a mis-framed message
        await wait_until(lambda: made[0].fd is None, timeout=5, message="the file was not closed")


async def test_disconnect_mid_transfer_stops_it_and_closes_the_file(tmp_path, sendfile_calls):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(256 * MiB)  # sparse
    app = App()
    made: list[FileResponse] = []

    @app.get("/big")
    async def download(request):
        made.append(FileResponse(big))
        return made[-1]

    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/big"))
            assert (await conn.read_some()).startswith(b"HTTP/1.1 200")
            await conn.read_exactly(MiB)
            conn.reset()  # RST: the next sendfile fails with a connection error
        await wait_until(lambda: made[0].fd is None, timeout=5, message="the file was not closed")
        await wait_until(lambda: server.connections == 0, timeout=5)
    assert sum(count for _, count in sendfile_calls) < 256 * MiB


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(d / "key.pem")
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(d / "cert.pem", append=i > 0)
    ca.cert_pem.write_to_path(d / "ca.pem")
    return d


async def test_tls_never_uses_sendfile(files, tls_files, sendfile_calls):
    import httpx2

    server = await aioserve.serve(file_app(files)[0], host=HOST, port=0, access_log=False,
                                  ssl_certfile=str(tls_files / "cert.pem"), ssl_keyfile=str(tls_files / "key.pem"))
    try:
        context = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
        async with httpx2.AsyncClient(verify=context, trust_env=False, timeout=10) as client:
            r = await client.get(f"https://{HOST}:{server.port}/f/big.bin")
            assert r.status_code == 200 and r.content == BODY
    finally:
        await asyncio.wait_for(server.shutdown(timeout=5), 15)
    assert sendfile_calls == []
