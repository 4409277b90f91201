"""One clear line for what a user can fix: log config, WEB_CONCURRENCY, a port in use with serve(),
app.run() in a running loop, a quote in the access log's target, client certificates without a CA."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

import aioserve
from aioserve import App
from tests.support import raw_connection, request_bytes, run_cli, running
from tests.support.process import REPO_ROOT, server_env
from tests.ops.test_accesslog import default_stderr  # noqa: F401  (fixture)


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("aioserve: error:"), result.stderr
    return lines[0]


def test_a_non_ini_log_config_is_one_line(tmp_path):
    bad = tmp_path / "logging.conf"
    bad.write_text("import os\nprint('not ini')\n")
    line = _one_line(run_cli(["examples.hello:app", "--port", "0", "--log-config", str(bad)]))
    assert str(bad) in line


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_a_bad_web_concurrency_is_one_line_naming_it(value):
    result = subprocess.run([sys.executable, "-m", "aioserve", "examples.hello:app", "--port", "0"],
                            cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30, env=server_env({"WEB_CONCURRENCY": value}))
    line = _one_line(result)
    assert "WEB_CONCURRENCY" in line and repr(value) in line and "--workers" not in line.split("WEB_CONCURRENCY")[0]


def test_ssl_cert_reqs_without_ca_certs_is_one_line(tmp_path):
    line = _one_line(run_cli(["examples.hello:app", "--port", "0", "--ssl-certfile", "c.pem", "--ssl-keyfile",
                              "k.pem", "--ssl-cert-reqs", "2"]))
    assert "--ssl-cert-reqs" in line and "--ssl-ca-certs" in line


def test_ssl_cert_reqs_without_ca_certs_programmatic():
    with pytest.raises(ValueError, match="ssl_ca_certs"):
        aioserve.Config.from_settings(ssl_certfile="c.pem", ssl_keyfile="k.pem", ssl_cert_reqs=2)


async def test_serve_on_a_port_in_use_names_the_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App()
        for batch in (64, 0):  # the batch acceptor's socket and the loop's create_server
            with pytest.raises(OSError, match=f"127.0.0.1:{port}") as info:
                await aioserve.serve(app, port=port, accept_batch=batch)
            assert info.value.errno is not None


async def test_app_run_inside_a_running_loop_says_to_await_serve():
    app = App()
    with pytest.raises(RuntimeError, match="await aioserve.serve"):
        app.run(port=0)
    await asyncio.sleep(0)


async def test_a_quote_in_the_target_is_escaped_in_the_access_log(default_stderr):  # noqa: F811
    default_stderr.install()
    app = App()

    @app.get("/{name}")
    async def hello(request, name: str):
        return "hi"

    async with running(app, access_log=True) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", '/a"b'))
        await conn.read_final_response()
        lines = await default_stderr.lines(1)
    assert len(lines) == 1 and '"GET /a%22b HTTP/1.1"' in lines[0], lines
