"""--factory with --reload: the factory runs in the server process only, never in the reloader.

The reloader just watches files; a factory may open connections or files, so calling it there would
open them in a process that never serves (and, when it fails, stop the reloader for good).
"""
from __future__ import annotations

import re
import sys

from tests.support import LISTENING, ServerProcess, http_get

MODULE = '''\
import os
import sys

from aioserve import App


def create_app():
    sys.stderr.write(f"factory called in {{os.getpid()}}\\n")
    {body}
    app = App()

    @app.get("/")
    async def index(request):
        return "{version}"

    return app
'''
CALLED = r"factory called in (\d+)"
SERVING = r"Listening on .* pid: (\d+)\)"


def write_module(src, version: str, body: str = "pass") -> None:
    (src / "factory_target.py").write_text(MODULE.format(version=version, body=body))


def factory_pids(server: ServerProcess) -> list[int]:
    return [int(m.group(1)) for m in (re.search(CALLED, line) for line in server.lines) if m]


def assert_served_after_start(server: ServerProcess, starts: int, body: bytes) -> None:
    """The ``starts``-th server process listens and answers; the factory ran there and nowhere else."""
    serving = [int(m.group(1)) for m in server.wait_for(SERVING, timeout=15, count=starts)]
    server.wait_listening()
    status, _, got = http_get(server.host, server.port, "/", timeout=5)
    assert (status, got) == (200, body), server.output
    assert factory_pids(server) == serving, server.output  # once per server process, in it


def test_cli_factory_reload_calls_the_factory_only_where_the_app_is_served(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_module(src, "v1")
    with ServerProcess("factory_target:create_app", "--factory", "--port", "0", "--reload", "--reload-dir",
                       str(src), "--reload-delay", "0.1", env={"PYTHONPATH": str(src)}) as server:
        assert_served_after_start(server, 1, b"v1")
        assert server.proc.pid not in factory_pids(server)
        write_module(src, "v2")
        assert_served_after_start(server, 2, b"v2")


def test_run_factory_reload_calls_the_factory_only_where_the_app_is_served(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_module(src, "v1")
    script = src / "serve_me.py"
    script.write_text(
        "import aioserve\n"
        "from factory_target import create_app\n"
        "if __name__ == '__main__':\n"
        f"    aioserve.run(create_app, factory=True, interface='aioserve', port=0, reload=True,\n"
        f"                 reload_dirs=[{str(src)!r}], reload_delay=0.1)\n")
    with ServerProcess(command=[sys.executable, str(script)], env={"PYTHONPATH": str(src)}) as server:
        assert_served_after_start(server, 1, b"v1")
        assert server.proc.pid not in factory_pids(server)


def test_reload_keeps_watching_when_the_factory_raises_until_it_is_fixed(tmp_path):
    """A factory that fails is the server process's one-line error; the reloader waits for the fix."""
    src = tmp_path / "src"
    src.mkdir()
    write_module(src, "v1", body="raise RuntimeError('database is down')")
    with ServerProcess("factory_target:create_app", "--factory", "--port", "0", "--reload", "--reload-dir",
                       str(src), "--reload-delay", "0.1", env={"PYTHONPATH": str(src)}) as server:
        server.wait_for(r"^aioserve: error: the factory factory_target:create_app raised RuntimeError: database is down$")
        server.wait_for("Server process exited with code 1; waiting for a change")
        assert server.proc.poll() is None, server.output  # the reloader is still there
        write_module(src, "v2")
        server.wait_for(LISTENING.pattern, timeout=15)
        server.wait_listening()
        status, _, got = http_get(server.host, server.port, "/", timeout=5)
        assert (status, got) == (200, b"v2"), server.output
