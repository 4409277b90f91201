"""aioserve with two workers behind a real nginx, configured with the README's Deployment snippet."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support import ServerProcess, deployment_snippet, free_port, wait_port

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with apt-get)")

CLIENT_ADDR = "127.0.0.2"  # the test's client: a loopback address that is not a trusted proxy


def _can_bind(addr: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False



def nginx_conf(tmp: Path, upstream_port: int, listen_port: int) -> str:
    snippet = deployment_snippet("nginx")
    assert "server 127.0.0.1:8000;" in snippet and "listen 80;" in snippet
    snippet = snippet.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    snippet = snippet.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
    temp = "\n".join(f"    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n{temp}\n{snippet}\n}}\n")


@pytest.fixture
def stack(tmp_path):
    """aioserve (2 workers, proxy headers) on a free port, nginx in front of it; both killed at the end."""
    if not _can_bind(CLIENT_ADDR):
        pytest.skip(f"cannot send from {CLIENT_ADDR} (a second loopback address, as on Linux)")
    with ServerProcess("tests.support.apps:ops_app", "--workers", "2", "--port", "0", "--proxy-headers",
                       "--limit-max-requests", "150", "--no-access-log") as server:
        server.wait_listening()
        port = free_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_conf(tmp_path, server.port, port))
        nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            try:
                wait_port("127.0.0.1", port)
            except OSError:
                nginx.kill()
                pytest.fail(f"nginx did not start: {nginx.communicate(timeout=5)[1].decode()}"
                            f"{(tmp_path / 'error.log').read_text() if (tmp_path / 'error.log').exists() else ''}")
            yield server, port
        finally:
            nginx.send_signal(signal.SIGQUIT)  # graceful
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(5)


def via_nginx(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT_ADDR, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_requests_pass_through_with_the_real_client_address(stack):
    server, port = stack
    status, body = via_nginx(port, "/whoami")
    assert status == 200
    who = json.loads(body)
    assert who["client"][0] == CLIENT_ADDR and who["scheme"] == "http"
    assert who["pid"] in server.worker_pids()
    # a client cannot spoof its address through nginx: nginx appends the real one, the right-most untrusted
    status, body = via_nginx(port, "/whoami", {"X-Forwarded-For": "6.6.6.6"})
    assert json.loads(body)["client"][0] == CLIENT_ADDR
    # and straight to aioserve from an untrusted peer, the headers are ignored
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(CLIENT_ADDR, 0))
    conn.request("GET", "/whoami", headers={"X-Forwarded-For": "6.6.6.6"})
    assert json.loads(conn.getresponse().read())["client"][0] == CLIENT_ADDR
    conn.close()


def test_streamed_response_is_intact(stack):
    _, port = stack
    status, body = via_nginx(port, "/stream?n=20000")
    assert status == 200
    assert body == "".join(f"{i}\n" for i in range(20000)).encode()


def test_worker_restarts_behind_nginx_fail_no_request(stack):
    server, port = stack
    old = set(server.worker_pids())
    failures: list[object] = []
    pids: list[int] = []
    done = threading.Event()
    progress = threading.Condition()

    def client() -> None:  # one keep-alive connection to nginx; nginx keeps its own to aioserve
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT_ADDR, 0))
        try:
            while not done.is_set() and len(pids) < 20000:
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200:
                        failures.append((resp.status, body[:200]))
                    else:
                        pids.append(json.loads(body)["pid"])
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(exc)
                    conn.close()
                with progress:
                    progress.notify_all()
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        server.signal(signal.SIGHUP)  # replace both workers, one by one
        for pid in old:
            server.wait_for(rf"Worker {pid} exited", timeout=20)
        # --limit-max-requests 150 recycles workers under this load as well
        server.wait_for("reached its request limit", timeout=20)
        count = len(pids)
        with progress:  # answered after the restarts (bounded)
            progress.wait_for(lambda: len(pids) >= count + 200 or not any(t.is_alive() for t in threads),
                              timeout=10)
    finally:
        done.set()
        for t in threads:
            t.join(15)
    assert not failures, failures[:5]
    assert len(set(pids)) >= 4  # old workers, their replacements, recycled ones
    assert not set(pids[-20:]) & old


def test_systemd_unit_flags_are_real_flags():
    """The Deployment section's systemd ExecStart parses with aioserve's own CLI."""
    import shlex

    from aioserve.cli import build_parser, settings_from_args
    from aioserve.config import Config

    unit = deployment_snippet("ini")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.partition("=")[2])
    assert argv[1:3] == ["-m", "aioserve"]
    config = Config.from_settings(**settings_from_args(build_parser().parse_args(argv[3:])))
    assert config.workers == 4 and config.proxy_headers


def test_server_sent_events_pass_nginx_unbuffered(stack):
    """The README's SSE location: the first event arrives while the stream is still open."""
    _, port = stack
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT_ADDR, 0))
    try:
        conn.request("GET", "/events/ticks", headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type").startswith("text/event-stream")
        assert resp.getheader("Cache-Control") == "no-cache"
        received = b""
        for _ in range(20):  # bounded: the socket timeout (10 s) bounds each read
            received += resp.read1(4096)
            if b"\n\n" in received:
                break
        event = received.split(b"\n\n")[0].decode()
        assert event.splitlines()[:2] == ["event: tick", "id: 0"]
        assert json.loads(event.splitlines()[2].removeprefix("data: "))["n"] == 0
    finally:
        conn.close()


def test_websocket_passes_nginx(stack):
    """The README's WebSocket location: the upgrade reaches aioserve and messages flow both ways."""
    from websockets.sync.client import connect

    _, port = stack
    with connect(f"ws://127.0.0.1:{port}/ws/echo", open_timeout=10, close_timeout=5) as ws:
        for text in ("one", "two" * 1000):
            ws.send(text)
            assert ws.recv(timeout=10) == text
