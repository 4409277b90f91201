"""``python -m aioserve`` run as a real subprocess."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import httpx2
import pytest

import aioserve
from tests.support import ServerProcess, run_cli, sync_client
from tests.support.apps import INFLIGHT_MARKER

LOOPS = ["asyncio", "uvloop"]


def _get(url: str, **kwargs) -> httpx2.Response:
    with sync_client() as client:
        return client.get(url, **kwargs)


@pytest.mark.parametrize("loop", LOOPS)
def test_serves_hello_app(loop):
    with ServerProcess(*["examples.hello:app", "--host", "127.0.0.1", "--port", "0", "--loop", loop]) as srv:
        srv.wait_listening()
        r = _get(srv.url("/"))
        assert r.status_code == 200
        assert r.text == "Hello, World!"
        assert r.headers["server"] == "aioserve"
        assert "date" in r.headers


@pytest.mark.parametrize("loop,expected", [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")])
def test_loop_flag_selects_the_event_loop(loop, expected):
    with ServerProcess(*["tests.support.apps:inflight_app", "--port", "0", "--host", "127.0.0.1", "--loop", loop]) as srv:
        srv.wait_listening()
        module = _get(srv.url("/loop")).text
        assert module.split(".")[0] == expected, module


def test_app_run_programmatic_and_sigterm():
    code = (
        "from examples.hello import app\n"
        "app.run(host='127.0.0.1', port=0, access_log=False)\n"
        "print('run() returned', flush=True)\n"
    )
    with ServerProcess(command=[sys.executable, "-c", code]) as srv:
        srv.wait_listening()
        assert _get(srv.url("/")).text == "Hello, World!"
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit(timeout=20) == 0
        assert b"run() returned" in srv.stdout


@pytest.mark.parametrize("loop", LOOPS)
def test_serves_router_target(loop):
    with ServerProcess(*["examples.routes:routes", "--port", "0", "--host", "127.0.0.1", "--loop", loop]) as srv:
        srv.wait_listening()
        r = _get(srv.url("/"))
        assert r.status_code == 200
        r = _get(srv.url("/items/2"))
        assert r.status_code == 200
        assert r.json()["id"] == 2
        assert _get(srv.url("/definitely/missing")).status_code == 404


def test_factory_flag():
    with ServerProcess(*["examples.scoring:create_app", "--factory", "--port", "0", "--host", "127.0.0.1"]) as srv:
        srv.wait_listening()
        r = _get(srv.url("/health"))
        assert r.status_code == 200
        assert r.json()["status"] == "ok"


def test_factory_flag_with_test_helper_factory():
    with ServerProcess(*["tests.support.apps:create_inflight_app", "--factory", "--port", "0", "--host", "127.0.0.1"]) as srv:
        srv.wait_listening()
        assert _get(srv.url("/")).text == "ready"


def test_factory_target_without_flag_is_an_error():
    # A plain function is not servable unless --factory is given.
    result = run_cli(["examples.scoring:create_app", "--port", "0", "--host", "127.0.0.1"])
    _assert_one_line_error(result)


def test_unix_domain_socket(tmp_path):
    path = tmp_path / "aioserve.sock"
    with ServerProcess(*["examples.hello:app", "--uds", str(path)]) as srv:
        reported = srv.wait_listening().uds
        assert reported == str(path)
        transport = httpx2.HTTPTransport(uds=str(path))
        with httpx2.Client(transport=transport, trust_env=False, timeout=10) as client:
            r = client.get("http://localhost/")
        assert r.status_code == 200
        assert r.text == "Hello, World!"


def test_version():
    result = run_cli(["--version"])
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert aioserve.__version__ in out
    assert re.search(r"\d+\.\d+", out)


def test_help():
    result = run_cli(["--help"])
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--uds", "--loop", "--factory", "--log-level", "--access-log", "--version"):
        assert flag in result.stdout, flag


def _assert_one_line_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert lines[0].startswith("aioserve: error:"), lines[0]
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize(
    "target",
    ["nosuchmodule:app", "examples.hello:missing", "os:sep", "noколон", "examples.hello:", ":app"],
)
def test_bad_target_is_one_line_error(target):
    result = run_cli([target, "--port", "0", "--host", "127.0.0.1"])
    _assert_one_line_error(result)


def test_error_names_the_problem():
    result = run_cli(["nosuchmodule:app"])
    assert "nosuchmodule" in result.stderr
    result = run_cli(["examples.hello:missing"])
    assert "missing" in result.stderr


def test_unknown_flag_is_an_error():
    result = run_cli(["examples.hello:app", "--no-such-flag"])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "--no-such-flag" in result.stderr


def test_missing_target_is_an_error():
    result = run_cli([])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("loop", LOOPS)
def test_signal_graceful_shutdown_finishes_in_flight(sig, loop):
    with ServerProcess(*["tests.support.apps:inflight_app", "--port", "0", "--host", "127.0.0.1", "--loop", loop]) as srv:
        srv.wait_listening()
        assert _get(srv.url("/")).text == "ready"

        result: dict = {}

        def do_request():
            try:
                result["response"] = _get(srv.url("/inflight"))
            except Exception as exc:  # reported by the assertion below
                result["error"] = exc

        worker = threading.Thread(target=do_request, daemon=True)
        worker.start()
        srv.wait_for(INFLIGHT_MARKER, timeout=10)
        srv.signal(sig)
        worker.join(timeout=15)
        assert not worker.is_alive(), "the in-flight request never completed"
        assert "error" not in result, f"in-flight request failed: {result.get('error')!r}\n{srv.output}"
        response = result["response"]
        assert response.status_code == 200
        assert response.text == "finished"
        rc = srv.wait_exit(timeout=20)
        assert rc == 0, f"exit code {rc}; stderr:\n{srv.output}"
        assert "Traceback" not in srv.output


def test_access_log_flag():
    with ServerProcess(*["examples.hello:app", "--port", "0", "--host", "127.0.0.1", "--access-log"]) as srv:
        srv.wait_listening()
        assert _get(srv.url("/?probe=1")).status_code == 200
        srv.wait_for(re.compile(r"GET /\?probe=1.*200|GET /.*200"), timeout=10)


def test_no_access_log_flag():
    with ServerProcess(*["examples.hello:app", "--port", "0", "--host", "127.0.0.1", "--no-access-log"]) as srv:
        srv.wait_listening()
        assert _get(srv.url("/")).status_code == 200
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit(timeout=20) == 0
        assert not any('"GET /' in line or "GET / " in line for line in srv.lines), srv.output


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def test_fd_flag_serves_an_inherited_socket():
    # The socket is listening before the server starts, so the request simply
    # waits in the kernel's accept queue until aioserve takes it over.
    with _listening_socket() as sock:
        port = sock.getsockname()[1]
        with ServerProcess(*["examples.hello:app", "--fd", str(sock.fileno())], pass_fds=(sock.fileno(),)) as srv:
            r = _get(f"http://127.0.0.1:{port}/")
            assert r.status_code == 200 and r.text == "Hello, World!"
            srv.signal(signal.SIGTERM)
            assert srv.wait_exit(timeout=20) == 0


def test_log_level_warning_hides_info_lines():
    with _listening_socket() as sock:
        port = sock.getsockname()[1]
        args = ["examples.hello:app", "--fd", str(sock.fileno()), "--log-level", "warning", "--access-log"]
        with ServerProcess(*args, pass_fds=(sock.fileno(),)) as srv:
            r = _get(f"http://127.0.0.1:{port}/")
            assert r.status_code == 200
            srv.signal(signal.SIGTERM)
            assert srv.wait_exit(timeout=20) == 0
            text = srv.output
            assert "Listening on" not in text  # an INFO line
            assert "GET /" not in text  # access lines are INFO too


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_against_cli_example():
    with ServerProcess(*["examples.hello:app", "--port", "0", "--host", "127.0.0.1"]) as srv:
        srv.wait_listening()
        result = subprocess.run(
            ["curl", "-si", "--noproxy", "*", "--max-time", "10", srv.url("/")],
            capture_output=True,
            timeout=20,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode("latin-1")
        head, _, body = out.partition("\r\n\r\n")
        lines = head.split("\r\n")
        assert lines[0].startswith("HTTP/1.1 200")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        assert headers["server"] == "aioserve"
        assert headers["content-length"] == "13"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert "date" in headers
        assert body == "Hello, World!"
