"""aioserve.testing's ``raise_server_exceptions`` does not depend on how logging is set up."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import pytest

from aioserve import App
from aioserve.testing import AsyncTestClient, TestClient


def boom_app() -> App:
    app = App()

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("boom")

    return app


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


