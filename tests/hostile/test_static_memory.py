"""Memory bound: 100 concurrent downloads of a 200 MiB file keep the server's RSS growth < 50 MiB.

The server runs in a subprocess (its RSS alone is measured); the file is sparse, so it costs no disk.
Each client reads a few MiB, so all 100 transfers are in flight at once (most paused by flow control
while others read), then closes: the test takes seconds, not the minutes 20 GB would.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.support import HOST, request_bytes
from tests.support import RssSampler, ServerProcess

MiB = 2**20
CLIENTS = 100
READ_EACH = 4 * MiB


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_100_downloads_of_a_200_mib_file_in_bounded_memory(tmp_path, loop):
    pytest.importorskip(loop)
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(200 * MiB)
    with ServerProcess(*["tests.support.files_app:app", "--port", "0", "--loop", loop, "--no-access-log"],
                       env={"AIOSERVE_TEST_FILES": str(tmp_path)}) as proc:
        port = proc.wait_listening().port

        async def download(all_started: asyncio.Event, started: list[int]) -> int:
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(request_bytes("GET", "/f/big.bin"))
                got = 0
                first = await asyncio.wait_for(reader.read(65536), 10)
                assert first.startswith(b"HTTP/1.1 200"), first[:100]
                got += len(first)
                started.append(1)
                if len(started) == CLIENTS:
                    all_started.set()
                await asyncio.wait_for(all_started.wait(), 20)  # every transfer is open at once
                for _ in range(100_000):
                    if got >= READ_EACH:
                        break
                    piece = await asyncio.wait_for(reader.read(256 * 1024), 10)
                    assert piece, "server closed early"
                    got += len(piece)
                return got
            finally:
                writer.close()

        async def main() -> list[int]:
            all_started = asyncio.Event()
            started: list[int] = []
            return await asyncio.gather(*(download(all_started, started) for _ in range(CLIENTS)))

        with RssSampler(proc.proc.pid) as rss:
            sizes = asyncio.run(main())
        assert all(size >= READ_EACH for size in sizes)
        assert proc.proc.poll() is None, proc.stderr_text()
        print(f"\npeak server RSS growth, {CLIENTS} downloads: {rss.growth_mib:.1f} MiB")
        assert rss.growth_mib < 50, f"server RSS grew by {rss.growth_mib:.1f} MiB"
