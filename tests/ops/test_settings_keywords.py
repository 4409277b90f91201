"""``serve()`` and ``run()`` take every CLI setting as a keyword, with the flag's name in snake_case and
the flag's meaning (API.md, "Running it"): ``interface=`` and ``factory=`` (what the target is),
and ``lifespan=`` and ``root_path=`` (ASGI). An App is itself an ASGI 3 app: ``interface="asgi"`` (and
``--interface asgi``) serve it through the ASGI adapter."""

from __future__ import annotations

import sys
import textwrap

import pytest

import aioserve
from aioserve import App, Config
from aioserve.config import SettingError
from tests.support import http_client, running, sync_client
from tests.support.asgi_apps import app as starlette_app
from tests.support.asgi_apps import no_lifespan


def hello_app() -> App:
    app = App()

    @app.get("/")
    async def index(request):
        return "hello"

    return app


async def get(server, path: str = "/") -> tuple[int, str]:
    async with http_client(server) as client:
        r = await client.get(path)
        return r.status_code, r.text


# -- interface= and factory= ---------------------------------------------------------------------

async def test_interface_asgi_serves_an_asgi_callable():
    async with running(no_lifespan, interface="asgi") as server:
        assert await get(server, "/x") == (200, "plain asgi")


async def test_interface_asgi_serves_an_app_through_the_asgi_adapter():
    """An App is itself an ASGI 3 app: interface="asgi" serves App.__call__, its lifespan runs its hooks."""
    app = hello_app()
    started = []

    @app.on_startup
    async def start():
        started.append(True)

    async with running(app, interface="asgi") as server:
        assert server.app is not app  # the adapter's App, with the App inside as its ASGI app
        assert await get(server) == (200, "hello")
        assert started == [True]


async def test_interface_asgi_serves_a_router_through_its_default_app():
    router = aioserve.Router()

    @router.get("/")
    async def index(request):
        return "routed"

    async with running(router, interface="asgi") as server:
        assert await get(server) == (200, "routed")


async def test_interface_aioserve_serves_an_app_and_refuses_an_asgi_callable():
    async with running(hello_app(), interface="aioserve") as server:
        assert await get(server) == (200, "hello")
    with pytest.raises(TypeError, match=r"^interface='aioserve' was given but the app is a function, not an "
                                        r"aioserve App or Router$"):
        await aioserve.serve(no_lifespan, host="127.0.0.1", port=0, interface="aioserve")


async def test_interface_auto_detects_as_before():
    async with running(no_lifespan, interface="auto") as server:
        assert await get(server, "/") == (200, "plain asgi")
    async with running(hello_app(), interface="auto") as server:
        assert server.app.__class__ is App
        assert await get(server) == (200, "hello")


@pytest.mark.parametrize("value", ["wsgi", None, 1])
async def test_a_bad_interface_names_the_keyword(value):
    with pytest.raises(SettingError, match=r"^interface must be one of 'auto', 'aioserve', 'asgi', not "):
        await aioserve.serve(hello_app(), host="127.0.0.1", port=0, interface=value)


async def test_interface_asgi_refuses_what_is_not_callable():
    with pytest.raises(TypeError, match=r"^interface='asgi' was given but the app is an int, not an ASGI callable$"):
        await aioserve.serve(42, host="127.0.0.1", port=0, interface="asgi")


async def test_factory_calls_the_target_to_get_the_app():
    calls = []

    def create_app() -> App:
        calls.append(1)
        return hello_app()

    async with running(create_app, factory=True) as server:
        assert await get(server) == (200, "hello")
    assert calls == [1]


async def test_factory_of_an_asgi_app_with_interface_asgi():
    async with running(lambda: starlette_app, factory=True, interface="asgi") as server:
        assert await get(server) == (200, "from lifespan")


async def test_factory_refuses_what_is_not_callable_and_a_non_bool():
    with pytest.raises(TypeError, match=r"^factory=True was given but the app is an App, not a callable"):
        await aioserve.serve(hello_app(), host="127.0.0.1", port=0, factory=True)
    with pytest.raises(SettingError, match=r"^factory must be True or False, not 'yes'$"):
        await aioserve.serve(hello_app, host="127.0.0.1", port=0, factory="yes")


# -- lifespan= and root_path=, with and without interface= ------------------------------------------

@pytest.mark.parametrize("interface", ["auto", "asgi"])
async def test_lifespan_and_root_path_keywords_mean_the_flags(interface):
    async with running(starlette_app, interface=interface, lifespan="off", root_path="/api/") as server:
        assert await get(server, "/") == (200, "no lifespan")  # lifespan off: its state never reached the scope
        async with http_client(server) as client:
            scope = (await client.get("/scope/x%20y")).json()
        assert scope == {"root_path": "/api", "path": "/api/scope/x y", "raw_path": "/api/scope/x%20y"}
    async with running(starlette_app, interface=interface, lifespan="on") as server:
        assert await get(server, "/") == (200, "from lifespan")


# -- run() takes them too (it blocks: in a subprocess) -----------------------------------------------

RUN_SCRIPT = textwrap.dedent("""
    import aioserve
    from examples.hello import app

    def create_app():
        return app

    aioserve.run(create_app, factory=True, interface="asgi", host="127.0.0.1", port=0, access_log=False)
""")


def test_run_takes_factory_and_interface(spawn):
    srv = spawn(command=[sys.executable, "-c", RUN_SCRIPT]).wait_listening()
    with sync_client() as client:
        r = client.get(srv.url("/"))
    assert (r.status_code, r.text) == (200, "Hello, World!")


def test_app_run_refuses_a_bad_interface_before_anything_starts():
    with pytest.raises(ValueError, match=r"^interface must be one of "):
        App().run(interface="wsgi")


def test_unknown_setting_lists_the_new_keywords():
    with pytest.raises(TypeError) as info:
        Config.from_settings(no_such_setting=1)
    for name in ("interface", "factory", "reload_dir", "reload_dirs", "lifespan", "root_path"):
        assert f" {name}," in str(info.value) or str(info.value).endswith(f" {name})")
