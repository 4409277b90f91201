"""A 100 MiB upload to a Starlette app served by aioserve (a subprocess) in bounded memory: the ASGI
adapter's ``receive()`` hands the body out as it is read, with flow control, never buffering it."""

from __future__ import annotations

import json
import socket

import pytest

from tests.support import RssSampler, ServerProcess

MiB = 1024 * 1024


@pytest.fixture(params=["asyncio", "uvloop"])
def server(request):
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    with ServerProcess("tests.support.asgi_apps:app", "--port", "0", "--host", "127.0.0.1", "--loop", request.param,
                       "--no-access-log", "--max-body-size", "-1") as proc:
        proc.wait_listening()
        yield proc


def post_count(port: int, megabytes: int) -> dict:
    """POST ``megabytes`` MiB to /count over a blocking socket, then read the answer to EOF."""
    piece = bytes(range(256)) * 4096  # 1 MiB
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % (megabytes * MiB))
        for _ in range(megabytes):
            sock.sendall(piece)
        data = b""
        for _ in range(10_000):
            got = sock.recv(65536)
            if not got:
                break
            data += got
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    return json.loads(body)


def test_100_mib_upload_to_starlette_in_bounded_memory(server):
    assert post_count(server.port, 1) == {"size": MiB}  # warm up: imports, first allocations
    with RssSampler(server.proc.pid) as rss:
        assert post_count(server.port, 100) == {"size": 100 * MiB}
    assert rss.growth_mib < 30, f"server RSS grew by {rss.growth_mib:.1f} MiB for a 100 MiB upload"
