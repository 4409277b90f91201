"""Listening: Unix sockets, inherited descriptors, backlog, IPv6, port 0."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess

import httpx2
import pytest

import aioserve
from tests.support import ServerProcess, http_get_json

APP = "tests.support.apps:ops_app"


def uds_get(path: str, url: str = "http://aioserve/whoami") -> httpx2.Response:
    with httpx2.Client(transport=httpx2.HTTPTransport(uds=path), timeout=10) as client:
        return client.get(url)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_uds_serves_with_documented_mode_and_is_removed(tmp_path, workers):
    path = str(tmp_path / "app.sock")
    with ServerProcess(APP, "--uds", path, "--workers", workers) as server:
        server.wait_listening()
        assert server.uds == path
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
        resp = uds_get(path)
        assert resp.status_code == 200 and resp.json()["client"] is None
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert not os.path.exists(path)


def test_uds_replaces_a_stale_socket_but_not_a_live_one(tmp_path):
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # bound, never listening, left behind
    stale.close()
    with ServerProcess(APP, "--uds", path) as server:
        server.wait_listening()
        assert uds_get(path).status_code == 200
        with ServerProcess(APP, "--uds", path) as second:
            assert second.wait_exit() != 0
            line = second.wait_for("aioserve: error:")[0].string
            assert "another server is listening" in line
        assert uds_get(path).status_code == 200


def test_fd_serves_an_inherited_socket():
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        with ServerProcess(APP, "--fd", str(sock.fileno()), pass_fds=[sock.fileno()]) as server:
            server.wait_listening()
            assert server.port == port
            assert http_get_json("127.0.0.1", port, "/whoami")["client"][0] == "127.0.0.1"
    finally:
        sock.close()


def test_fd_with_workers():
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        with ServerProcess(APP, "--fd", str(sock.fileno()), "--workers", "2", pass_fds=[sock.fileno()]) as server:
            server.wait_listening()
            assert http_get_json(server.host, server.port)["pid"] in server.worker_pids()
    finally:
        sock.close()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the listen backlog")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_backlog_reaches_listen(workers):
    with ServerProcess(APP, "--port", "0", "--backlog", "123", "--workers", workers) as server:
        server.wait_listening()
        out = subprocess.run(["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True,
                             timeout=10).stdout
        # For a listening socket ss prints Recv-Q (queued) and Send-Q (the backlog).
        assert out.split()[2] == "123", out


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("host,workers", [("::1", "1"), ("::", "1"), ("::", "2")])
def test_ipv6(host, workers, spawn):
    server = spawn(APP, "--host", host, "--port", "0", "--workers", workers)
    server.wait_listening()
    assert server.host == host
    assert http_get_json("::1", server.port, "/whoami")["client"][0] == "::1"


def test_port_zero_reports_the_bound_port_on_the_cli(spawn):
    server = spawn(APP, "--port", "0")
    server.wait_listening()
    assert server.port > 0
    assert http_get_json("127.0.0.1", server.port)["pid"] == server.proc.pid


async def test_port_zero_reports_the_bound_port_in_serve():
    from tests.support.apps import ops_app as app

    server = await aioserve.serve(app, host="127.0.0.1", port=0)
    try:
        assert server.port and server.url == f"http://127.0.0.1:{server.port}"
        async with httpx2.AsyncClient() as client:
            assert (await client.get(f"{server.url}/whoami")).status_code == 200
    finally:
        await server.shutdown(timeout=5)


async def test_serve_on_uds_removes_the_file(tmp_path):
    from tests.support.apps import ops_app as app

    path = str(tmp_path / "s.sock")
    server = await aioserve.serve(app, uds=path)
    try:
        assert server.url == f"unix:{path}"
        async with httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=path)) as client:
            assert (await client.get("http://x/health")).text == "ok"
    finally:
        await server.shutdown(timeout=5)
    assert not os.path.exists(path)


def test_bad_listen_address_is_one_line(tmp_path, spawn):
    server = spawn(APP, "--uds", str(tmp_path / "missing" / "s.sock"))
    assert server.wait_exit() != 0
    server.wait_for("<EOF>")
    errors = [line for line in server.lines if "aioserve: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("aioserve: error: cannot listen on"), server.output
    assert "Traceback" not in server.output
