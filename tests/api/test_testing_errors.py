"""aioserve.testing's ``raise_server_exceptions`` does not depend on how logging is set up."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import pytest

from aioserve import App, WebSocket
from aioserve.testing import AsyncTestClient, TestClient
from tests.support import http_client, running


def boom_app() -> App:
    app = App()

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("boom")

    return app


def _patched() -> list[str]:
    """What aioserve.testing has shadowed on the aioserve.error logger (nothing while no client is open)."""
    return sorted(name for name in ("isEnabledFor", "handle") if name in vars(logging.getLogger("aioserve.error")))


@contextlib.contextmanager
def _quiet_level() -> Iterator[None]:
    logger = logging.getLogger("aioserve")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


@contextlib.contextmanager
def _disabled_globally() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _logger_disabled() -> Iterator[None]:
    logger = logging.getLogger("aioserve.error")
    old = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = old


@pytest.mark.parametrize("quiet", [_quiet_level, _disabled_globally, _logger_disabled],
                         ids=["level", "logging.disable", "logger.disabled"])
def test_server_exceptions_raise_whatever_the_logging_setup(quiet):
    with quiet(), TestClient(boom_app()) as client:
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/boom")


async def test_async_server_exceptions_raise_with_logging_disabled(logs):
    with _disabled_globally():
        async with AsyncTestClient(boom_app()) as client:
            with pytest.raises(RuntimeError, match="boom"):
                await client.get("/boom")
    assert not logs.by_logger("aioserve.error"), "a silenced logger still wrote: " + logs.describe()


def test_collecting_errors_leaves_the_logging_output_alone(logs):
    with TestClient(boom_app(), raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
    errors = logs.by_logger("aioserve.error")
    assert len(errors) == 1 and errors[0].exc_info[0] is RuntimeError
    logger = logging.getLogger("aioserve.error")
    assert "handle" not in vars(logger) and "isEnabledFor" not in vars(logger)  # nothing left behind




@pytest.mark.parametrize("client_class", [TestClient, AsyncTestClient])
def test_a_constructor_that_fails_leaves_the_logger_alone(client_class):
    with pytest.raises(TypeError):
        client_class(boom_app(), headers=5)  # httpx2 refuses the headers: no client exists to undo anything
    assert _patched() == []
    with TestClient(boom_app()) as client:  # and the next client still installs, and removes, its own
        assert _patched() == ["handle", "isEnabledFor"]
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/boom")
    assert _patched() == []


def levels_app(seen: dict) -> App:
    app = App()

    @app.get("/levels")
    async def levels(request):
        logger = logging.getLogger("aioserve.error")
        seen["levels"] = (logger.isEnabledFor(logging.DEBUG), logger.isEnabledFor(logging.WARNING),
                          logger.isEnabledFor(logging.ERROR))
        return "ok"

    @app.websocket("/ws")
    async def echo(ws: WebSocket):
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    return app


async def test_a_test_request_enables_only_error_and_above_past_logging_disable():
    seen: dict = {}
    with _disabled_globally():
        async with AsyncTestClient(levels_app(seen)) as client:
            assert (await client.get("/levels")).text == "ok"
    assert seen["levels"] == (False, False, True)  # ERROR is what the client collects; the rest stays off


async def test_a_real_server_started_from_the_test_does_not_report_to_the_test_client():
    """The test's own context is not the test connection's: a server the test starts (which copies the
    test's context) logs as configured, and its errors are not raised by the test client."""
    logger = logging.getLogger("aioserve.error")
    with _disabled_globally():
        async with AsyncTestClient(levels_app({})) as client:
            assert (await client.get("/levels")).status_code == 200
            async with client.websocket_connect("/ws") as ws:
                await ws.send_text("hi")
                assert await ws.receive_text() == "hi"
                assert not logger.isEnabledFor(logging.ERROR)  # logging.disable holds in the test's context
                async with running(boom_app()) as server, http_client(server) as http:
                    assert (await http.get("/boom")).status_code == 500
                await ws.send_text("again")
                assert await ws.receive_text() == "again"
            # leaving the session raised the real server's RuntimeError before
            assert ws.close_code == 1000
            assert (await client.get("/levels")).status_code == 200
