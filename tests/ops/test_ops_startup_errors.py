"""What an operator sees when the target or its start-up goes wrong: one line saying what to fix,
and a signal during a long start-up stops the server at once.

The apps are modules written to a temporary directory, so each case says exactly what it does.
"""
from __future__ import annotations

import signal

import pytest

from tests.support import ServerProcess

MODULE = '''\
import asyncio
import sys

from aioserve import App


def factory_none():
    return None


async def async_factory():
    return App()


app = App()

failing = App()


@failing.on_startup
async def cannot_connect():
    raise RuntimeError("cannot reach redis")


slow = App()


@slow.on_startup
async def takes_long():
    sys.stderr.write("start-up began\\n")
    await asyncio.sleep(60)
'''


@pytest.fixture
def module_env(tmp_path):
    (tmp_path / "startup_target.py").write_text(MODULE)
    (tmp_path / "slow_import.py").write_text(
        "import sys, time\nsys.stderr.write('importing\\n')\ntime.sleep(60)\n")
    return {"PYTHONPATH": str(tmp_path)}


def ended_with(server: ServerProcess, timeout: float = 15.0) -> tuple[int, list[str]]:
    """The exit code and the stderr lines, once the process has exited."""
    code = server.wait_exit(timeout)
    server.wait_for("<EOF>")
    return code, server.lines[:-1]


@pytest.mark.parametrize("target, line", [
    ("startup_target:factory_none", "the factory startup_target:factory_none returned None, not an aioserve App "
                                    "or Router (or an ASGI 3 app)"),
    ("startup_target:async_factory", "the factory startup_target:async_factory is async (it returned a coroutine); "
                                     "--factory needs a plain function that returns the app"),
], ids=["returns-none", "async"])
def test_a_factory_that_returns_no_app_is_one_line_naming_the_factory(module_env, target, line):
    with ServerProcess(target, "--factory", "--port", "0", env=module_env) as server:
        code, lines = ended_with(server)
    assert (code, lines) == (1, [f"aioserve: error: {line}"])  # no "coroutine was never awaited" warning


def test_a_missing_nested_attribute_names_the_object_that_lacks_it(module_env):
    with ServerProcess("startup_target:app.nope", "--port", "0", env=module_env) as server:
        code, lines = ended_with(server)
    assert (code, lines) == (1, ["aioserve: error: startup_target:app has no attribute 'nope'"])


def test_a_failing_startup_hook_ends_with_one_error_line_after_its_traceback(module_env):
    with ServerProcess("startup_target:failing", "--port", "0", env=module_env) as server:
        code, lines = ended_with(server)
    assert code == 1
    assert lines[-1] == "aioserve: error: start-up failed: RuntimeError: cannot reach redis (traceback above)"
    assert "Traceback (most recent call last):" in lines and "in cannot_connect" in "\n".join(lines)


def test_ctrl_c_while_the_module_imports_exits_without_a_traceback(module_env):
    with ServerProcess("slow_import:app", "--port", "0", env=module_env) as server:
        server.wait_for("^importing$")
        server.signal(signal.SIGINT)
        code, lines = ended_with(server)
    assert (code, lines) == (130, ["importing"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_workers_stop_at_once_when_signalled_during_a_long_startup(module_env, sig):
    """The hook would take 60 s, and the graceful timeout is 30 s: the workers stop within the wait."""
    with ServerProcess("startup_target:slow", "--port", "0", "--workers", "2", env=module_env) as server:
        server.wait_for("^start-up began$", count=2)
        server.signal(sig)
        code, lines = ended_with(server, timeout=10)
    assert code == 0, lines
    assert server.count(r"Worker \d+ stopped during start-up") == 2, server.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_one_process_stops_at_once_when_signalled_during_a_long_startup(module_env, sig):
    """The same in one process: the hook would take 60 s; the server stops within the wait, and never
    says it is listening."""
    with ServerProcess("startup_target:slow", "--port", "0", env=module_env) as server:
        server.wait_for("^start-up began$")
        server.signal(sig)
        code, lines = ended_with(server, timeout=10)
    assert code == 0, lines
    assert server.count("Stopped during start-up") == 1, server.output
    assert server.count("Listening on") == 0, server.output


def test_a_worker_whose_asgi_lifespan_fails_says_why_in_one_line():
    with ServerProcess("tests.support.asgi_apps:broken_lifespan", "--port", "0", "--workers", "2") as server:
        server.wait_for(r"exited \(code 3\) before it was ready", count=2)
        server.stop()
    failures = [line for line in server.lines if "failed to start" in line]
    assert len(failures) >= 2, server.output
    assert all(line.endswith("failed to start: ASGI lifespan startup of Starlette failed: RuntimeError: "
                             "database unreachable") for line in failures), server.output
    assert "Traceback" not in server.output
