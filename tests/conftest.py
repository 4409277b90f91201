"""Shared pytest configuration for the aioserve test suite.

Every async test runs twice: once on the stock asyncio loop and once on uvloop
(when it is installed).  pytest-asyncio (>= 1.5) parametrises the tests itself
from the mapping returned by ``pytest_asyncio_loop_factories``, so test ids end
in ``[asyncio]`` / ``[uvloop]``. With ``AIOSERVE_TEST_EAGER=1`` (3.12+) the asyncio loop has
``asyncio.eager_task_factory`` installed (run it with ``-k "not uvloop"``).

Test support lives in ``tests/support`` (importable as ``tests.support``: pyproject's
``pythonpath = ["."]`` puts the repository root on sys.path). The fixtures below are the
ones most tests want without an import.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support import REPO_ROOT, LogCapture, ServerProcess, capture_logs
from tests.support import access_records as _access_records

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None


def _eager_loop() -> asyncio.AbstractEventLoop:
    """asyncio's loop with the task factory users install for speed on 3.12+ (AIOSERVE_TEST_EAGER=1):
    every task the server makes then runs its first step inside create_task. uvloop 0.23 on 3.13 cannot use it."""
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    return loop


def pytest_asyncio_loop_factories(config, item):
    eager = os.environ.get("AIOSERVE_TEST_EAGER") and sys.version_info >= (3, 12)
    factories = {"asyncio": _eager_loop if eager else asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Records from the root, ``aioserve`` and ``asyncio`` loggers during the test."""
    with capture_logs() as capture:
        yield capture


@pytest.fixture
def access_records() -> Iterator[list]:
    """The ``aioserve.access`` records written during the test (the logger at INFO meanwhile)."""
    with _access_records() as records:
        yield records


@pytest.fixture
def spawn() -> Iterator[Callable[..., ServerProcess]]:
    """``spawn(*args, **kw)`` starts a ``ServerProcess``; every one is stopped when the test ends."""
    started: list[ServerProcess] = []

    def start(*args: str, **kwargs) -> ServerProcess:
        process = ServerProcess(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()
