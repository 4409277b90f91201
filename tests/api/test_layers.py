"""The package's layers depend one way, and no module imports itself round a cycle.

``lint-imports`` (the contract in pyproject.toml) checks the direction in CI; these tests check what
it cannot: that every module is placed in a layer, and that there is no cycle at all, even inside a
layer, counting imports inside functions and under ``TYPE_CHECKING`` (grimp sees both).
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[name.strip() for name in layer.split(":")] for layer in contract["layers"]]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("aioserve", include_external_packages=False)


def test_every_module_has_a_layer(graph):
    placed = {name for layer in _layers() for name in layer}
    modules = graph.modules - {"aioserve"}
    assert sorted(modules - placed) == [], "add the new module to a layer in pyproject.toml"
    assert sorted(placed - modules) == [], "a layer names a module that no longer exists"


def test_no_import_cycle(graph):
    modules = sorted(graph.modules - {"aioserve"})
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) - {"aioserve"}) for m in modules}
    state: dict[str, int] = {}  # 1 on the path being walked, 2 done
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in edges[module]:
            if state.get(imported) == 1:
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                walk(imported, path + [imported])
        state[module] = 2

    for module in modules:
        if module not in state:
            walk(module, [module])
    assert cycles == []

