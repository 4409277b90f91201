"""Shared pytest configuration for the aioserve test suite.

Every async test runs twice: once on the stock asyncio loop and once on uvloop
(when it is installed).  pytest-asyncio (>= 1.5) parametrises the tests itself
from the mapping returned by ``pytest_asyncio_loop_factories``, so test ids end
in ``[asyncio]`` / ``[uvloop]``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None

# The helpers module lives beside this file; make it importable no matter how
# pytest was started (rootdir, a single file, or -p no:cacheprovider ...).
_TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = _TESTS_DIR.parent
# The repository root too, so ``aioserve`` and ``examples`` import from the
# checkout even when the package is not installed and pytest is run directly.
for _path in (str(_TESTS_DIR), str(REPO_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
