"""Forms under hostile input: a 100 MiB upload in bounded memory (a server subprocess, its RSS read
from /proc), and hypothesis-mutated multipart bodies that must get 200, 400 or 413, never a 500."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioserve.errors import HTTPError
from aioserve.forms import FormLimits, MultipartReader
from tests.support import RssSampler, ServerProcess

MiB = 1024 * 1024
BOUNDARY = "fuzzB0undary"
LOOPS = ["asyncio", "uvloop"]


def _loop_available(name: str) -> bool:
    if name == "asyncio":
        return True
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module", params=LOOPS)
def server(request):
    if not _loop_available(request.param):
        pytest.skip("uvloop is not installed")
    with ServerProcess(*["tests.support.forms_app:app", "--port", "0", "--loop", request.param, "--no-access-log",
                        "--max-body-size", "-1"]) as proc:
        proc.wait_listening()
        yield proc


def _post(port: int, path: str, head_extra: bytes, parts: list[bytes], timeout: float = 60.0) -> tuple[int, bytes]:
    """POST a body given as pieces over a blocking socket; return (status, body)."""
    length = sum(len(p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: %d\r\n\r\n"
                     % (path.encode(), head_extra, length))
        try:
            for piece in parts:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered early (413/400) and closed: the answer is still readable
        data = b""
        for _ in range(100_000):
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head[9:12]), rest


def test_100_mib_multipart_upload_in_bounded_memory(server):
    size = 100 * MiB
    piece = bytes(range(256)) * 4096  # 1 MiB
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
    _post(server.port, "/upload-size", ctype, [head, b"x", tail])  # warm up: imports, first allocations
    with RssSampler(server.proc.pid) as rss:
        status, body = _post(server.port, "/upload-size", ctype, [head] + [piece] * (size // MiB) + [tail])
    assert status == 200, body
    assert json.loads(body.split(b"\r\n", 1)[-1] if b"\r\n" in body else body) == {
        "size": size, "in_memory": False, "name": "big"}
    assert rss.growth_mib < 50, f"server RSS grew by {rss.growth_mib:.1f} MiB for a 100 MiB upload"


def test_many_files_in_one_form_in_bounded_memory(server):
    """45 files of 1 MiB: together they are held in memory only up to the spool size (1 MiB), the rest
    spool to disk as they arrive. (Each file alone is within the spool size: before the bound was on
    the whole form, every one stayed in memory and RSS grew by the body's 45 MiB.)"""
    count = 45
    parts = []
    for i in range(count):
        parts.append((f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"; filename="f{i}.bin"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n").encode())
        parts.append(bytes([i]) * MiB + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
    _post(server.port, "/form", ctype, parts[:2] + parts[-1:])  # warm up: one file, imports, first allocations
    with RssSampler(server.proc.pid) as rss:
        status, body = _post(server.port, "/form", ctype, parts)
    assert status == 200, body[:300]
    files = json.loads(body)["files"]
    assert [f["size"] for f in files] == [MiB] * count
    print(f"\npeak server RSS growth, {count} files of 1 MiB: {rss.growth_mib:.1f} MiB")
    assert rss.growth_mib < 20, f"server RSS grew by {rss.growth_mib:.1f} MiB for {count} files of 1 MiB"
    assert files[0]["in_memory"] and not any(f["in_memory"] for f in files[1:])


# --------------------------------------------------------------------------
# fuzzing
# --------------------------------------------------------------------------

VALID = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="a"\r\n\r\nvalue\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="x.txt"\r\nContent-Type: text/plain\r\n\r\n'
    f"file body\r\n--{BOUNDARY}--\r\n"
).encode()

PIECES = [b"\r\n", b"--", BOUNDARY.encode(), b"\r\n--" + BOUNDARY.encode(), b"Content-Disposition: form-data; name=\"z\"",
          b"filename=\"", b";", b":", b"\n", b"\r", b"\x00", b"\xff", b"--\r\n", b" ", b"Content-Length: 3"]


@st.composite
def mutated_bodies(draw) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "repeat"]))
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(PIECES), st.binary(max_size=16)))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 12))]
        elif op == "replace" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = bytes(data[at:at + draw(st.integers(1, 40))]) * draw(st.integers(1, 20))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=mutated_bodies(), path=st.sampled_from(["/form", "/parts"]))
def test_mutated_multipart_bodies_never_get_a_500(server, payload, path):
    ctype = f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
    status, body = _post(server.port, path, ctype, [payload], timeout=10)
    assert status in (200, 400, 413), (status, body[:300])


@settings(max_examples=300, deadline=None)
@given(payload=mutated_bodies(), cuts=st.lists(st.integers(1, 64), max_size=8),
       limits=st.sampled_from([FormLimits(), FormLimits(max_parts=1, max_field_size=3, max_file_size=4, max_part_header_size=40)]))
def test_reader_on_mutated_bodies_raises_only_400_or_413(payload, cuts, limits):
    """The reader alone, with the body split at random places: a result or an HTTPError, nothing else."""
    pieces, rest = [], payload
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)

    async def stream():
        for piece in pieces:
            yield piece

    async def read_all() -> list:
        return [(p.name, p.filename, await p.read()) async for p in MultipartReader(stream(), BOUNDARY, limits)]

    try:
        asyncio.run(read_all())
    except HTTPError as exc:
        assert exc.status in (400, 413)
