"""Server settings (``serve()`` keywords / CLI flags) are accepted and take effect.

Size limits, connection limits and backlog are covered in test_limits.py."""

from __future__ import annotations

import asyncio

import pytest

import aioserve
from aioserve import App
from tests.support import raw_connection, request_bytes, run_cli, running

# Every flag named in the public contract, with its snake_case keyword and a
# harmless value for an in-process server on a free port.
DOCUMENTED_SETTINGS = {
    "host": "127.0.0.1",
    "port": 0,
    "uds": None,
    "fd": None,
    "workers": 1,
    "loop": "auto",
    "log_level": "warning",
    "access_log": False,
    "timeout_keep_alive": 30,
    "timeout_graceful_shutdown": 5,
    "limit_connections": None,
    "limit_in_flight": None,
    "limit_max_requests": None,
    "backlog": 128,
    "reload": False,
    "ssl_keyfile": None,
    "ssl_certfile": None,
    "proxy_headers": False,
    "forwarded_allow_ips": "127.0.0.1",
}


def small_app() -> App:
    app = App()

    @app.get("/")
    async def index(request):
        return "ok"

    @app.get("/client")
    async def client(request):
        host, port = request.client
        return {"host": host}

    return app


@pytest.mark.parametrize("name", sorted(DOCUMENTED_SETTINGS))
async def test_serve_accepts_every_documented_setting(name):
    settings = {"host": "127.0.0.1", "port": 0, "access_log": False, name: DOCUMENTED_SETTINGS[name]}
    server = await aioserve.serve(small_app(), **settings)
    try:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/"))
            assert (await conn.read_final_response()).body == b"ok"
    finally:
        await asyncio.wait_for(server.shutdown(timeout=5), 15)


def test_help_lists_every_documented_flag():
    result = run_cli(["--help"])
    assert result.returncode == 0
    missing = [
        "--" + name.replace("_", "-")
        for name in DOCUMENTED_SETTINGS
        if "--" + name.replace("_", "-") not in result.stdout
    ]
    assert missing == [], f"flags missing from --help: {missing}"
    assert "--no-access-log" in result.stdout


async def test_unknown_setting_is_rejected():
    with pytest.raises(TypeError):
        await aioserve.serve(small_app(), host="127.0.0.1", port=0, no_such_setting=1)


async def test_timeout_keep_alive_closes_idle_connections():
    async with running(small_app(), timeout_keep_alive=1) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200
        await conn.assert_silent(0.3)  # not closed at once
        assert await conn.is_closed_by_peer(timeout=5), "idle keep-alive connection never closed"


async def test_proxy_headers_trusted_only_when_enabled():
    forwarded = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")]
    async with running(small_app(), proxy_headers=True, forwarded_allow_ips="127.0.0.1") as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/client", headers=forwarded))
            assert (await conn.read_final_response()).body == b'{"host":"203.0.113.7"}'
    async with running(small_app(), proxy_headers=False) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/client", headers=forwarded))
            assert (await conn.read_final_response()).body == b'{"host":"127.0.0.1"}'
    async with running(small_app(), proxy_headers=True, forwarded_allow_ips="10.9.9.9") as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/client", headers=forwarded))
            assert (await conn.read_final_response()).body == b'{"host":"127.0.0.1"}'
