"""``python -m aioserve`` serving ASGI apps, as a real subprocess: detection, ``--interface``,
``--lifespan``, a failing lifespan startup, ``--root-path``."""

from __future__ import annotations

import pytest

from tests.support import ServerProcess, run_cli, sync_client

BASE = ["--host", "127.0.0.1", "--port", "0", "--no-access-log"]


def get(srv: ServerProcess, path: str) -> tuple[int, str]:
    with sync_client() as client:
        r = client.get(srv.url(path))
        return r.status_code, r.text


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("interface", [None, "asgi"])
def test_a_starlette_app_is_detected_or_named(spawn, loop, interface):
    extra = ["--interface", interface] if interface else []
    srv = spawn("tests.support.asgi_apps:app", *BASE, "--loop", loop, *extra).wait_listening()
    assert get(srv, "/") == (200, "from lifespan")  # lifespan ran (auto), its state reached the scope


def test_a_bare_asgi_function_is_detected(spawn):
    srv = spawn("tests.support.asgi_apps:no_lifespan", *BASE).wait_listening()
    assert get(srv, "/anything") == (200, "plain asgi")


def test_interface_aioserve_refuses_an_asgi_app():
    result = run_cli(["tests.support.asgi_apps:app", "--interface", "aioserve", *BASE])
    assert result.returncode != 0
    assert "--interface aioserve was given but tests.support.asgi_apps:app is a Starlette" in result.stderr


def test_interface_asgi_serves_an_aioserve_app_through_the_adapter(spawn):
    """An App is an ASGI 3 app itself (App.__call__): --interface asgi serves it as one, not an error."""
    srv = spawn("examples.hello:app", "--interface", "asgi", *BASE).wait_listening()
    assert get(srv, "/hello/asgi?greeting=Hi") == (200, "Hi, asgi!")
    assert get(srv, "/nowhere")[0] == 404


@pytest.mark.parametrize("target,what", [("tests.support.asgi_apps:ROUTES", "a list"),
                                         ("examples.hello:__name__", "a str")])
def test_interface_asgi_refuses_what_is_not_callable(target, what):
    result = run_cli([target, "--interface", "asgi", *BASE])
    assert result.returncode == 1
    assert result.stderr == f"aioserve: error: --interface asgi was given but {target} is {what}, not an ASGI callable\n"


def test_factory_of_an_app_is_one_line():
    result = run_cli(["examples.hello:app", "--factory", *BASE])
    assert result.returncode == 1
    assert result.stderr == ("aioserve: error: --factory was given but examples.hello:app is an App, "
                             "not a callable that returns one\n")


def test_lifespan_off_skips_startup(spawn):
    srv = spawn("tests.support.asgi_apps:app", *BASE, "--lifespan", "off").wait_listening()
    assert get(srv, "/") == (200, "no lifespan")


def test_lifespan_auto_serves_an_app_without_lifespan(spawn):
    srv = spawn("tests.support.asgi_apps:no_lifespan", *BASE, "--lifespan", "auto").wait_listening()
    assert get(srv, "/") == (200, "plain asgi")
    assert srv.count("does not support lifespan") == 1


def test_lifespan_on_requires_it():
    result = run_cli(["tests.support.asgi_apps:no_lifespan", *BASE, "--lifespan", "on"])
    assert result.returncode != 0
    assert "ASGI lifespan startup of no_lifespan failed: RuntimeError: unsupported scope type lifespan" in result.stderr


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_a_failing_lifespan_startup_is_one_line_and_a_non_zero_exit(lifespan):
    result = run_cli(["tests.support.asgi_apps:broken_lifespan", *BASE, "--lifespan", lifespan])
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "database unreachable" in line]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Listening on" not in result.stderr  # it never served


def test_root_path_reaches_the_scope(spawn):
    srv = spawn("tests.support.asgi_apps:app", *BASE, "--root-path", "/api/").wait_listening()
    with sync_client() as client:
        scope = client.get(srv.url("/scope/x%20y")).json()
    assert scope == {"root_path": "/api", "path": "/api/scope/x y", "raw_path": "/api/scope/x%20y"}
