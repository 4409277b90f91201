"""Micro-benchmark: aioserve route lookup time with 10, 100, 1,000 and 10,000 routes.

    python -m benchmarks.router_scaling [--sizes 10,100,1000,10000] [--number 200000]

Routes are registered through the public decorators (``app.get(pattern)(handler)``): half static
(``/s{i}/items``), half parameterised (``/p{i}/{id:int}/x``), plus ``/users/{id:int}`` registered last.
Parameterised paths seen recently are answered from a bounded cache (radix.py); the row "a new id each
time" cycles through more distinct paths than the cache holds, so it times the tree walk itself.
Each lookup kind is timed through ``app.resolve(method, path)`` (what a request pays: path match +
method + parameter dict) and, when the app exposes its route tree (``app.tree`` / ``app.router`` /
``app._tree`` with ``match(path)``), through the tree alone. Sizes are interleaved over rounds
and the minimum kept (the machine is shared); ns per lookup.

The API promises "lookup cost does not grow with the number of routes": the report shows each
figure's ratio to the smallest table, and flags any above 1.5x.
Writes benchmarks/results/router_scaling.{md,json}.
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import sys
import time
import timeit
from pathlib import Path

from .harness import RESULTS_DIR
from . import procstats

GROWTH_FLAG = 1.5
# Distinct ids cycled through for the cache-miss row: four times the lookup cache's size, so every
# lookup walks the tree (and pays its share of the cache's upkeep), as a stream of new ids would.
MISS_IDS = 4096


def _handler_plain(i: int):
    async def h(request):
        return "ok"

    h.__name__ = f"static_{i}"
    return h


def _handler_param(i: int):
    async def h(request, id: int):
        return {"route": i, "id": id}

    h.__name__ = f"param_{i}"
    return h


async def _user(request, id: int):
    return {"id": id}


def build_app(n: int):
    from aioserve import App

    app = App()
    half = n // 2
    for i in range(half):
        app.get(f"/s{i}/items")(_handler_plain(i))
    for i in range(n - half):
        app.get(f"/p{i}/{{id:int}}/x")(_handler_param(i))
    app.get("/users/{id:int}")(_user)
    return app


def find_tree(app):
    """The route tree if the app exposes one with ``match(path)``; (name, object) or (None, None)."""
    for attr in ("tree", "router", "_tree", "_router"):
        obj = getattr(app, attr, None)
        if obj is not None and callable(getattr(obj, "match", None)):
            return attr, obj
    return None, None


def lookups(n: int) -> dict[str, tuple[str, str]]:
    half = n // 2
    last_static = max(0, half - 1)
    last_param = max(0, n - half - 1)
    return {
        "static, first registered": ("GET", "/s0/items"),
        "static, last registered": ("GET", f"/s{last_static}/items"),
        "param, first registered": ("GET", "/p0/123/x"),
        "param, last registered": ("GET", f"/p{last_param}/123/x"),
        "/users/{id}, registered after all": ("GET", "/users/4242"),
        "/users/{id}, a new id each time": ("GET", [f"/users/{i}" for i in range(MISS_IDS)]),
        "miss (404)": ("GET", "/nope/123/x"),
        "wrong method (405)": ("POST", "/users/4242"),
    }


def time_call(fn, number: int) -> float:
    """Best-of-3 ns per call."""
    t = timeit.Timer(fn)
    return min(t.repeat(repeat=3, number=number)) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.router_scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,100,1000,10000")
    p.add_argument("--number", type=int, default=100_000, help="lookups per timing repeat")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the minimum is kept")
    p.add_argument("--quick", action="store_true", help="--number 20000 --rounds 3")
    p.add_argument("--out", default=str(RESULTS_DIR))
    a = p.parse_args(argv)
    number = 20_000 if a.quick else a.number
    if a.quick:
        a.rounds = 3
    sizes = [int(x) for x in a.sizes.split(",")]
    try:
        importlib.import_module("aioserve")
    except Exception as e:
        print(f"aioserve does not import: {e!r}", file=sys.stderr)
        return 1
    try:
        import os

        os.sched_setaffinity(0, {0})
    except (AttributeError, OSError):
        pass

    results: dict = {"sizes": sizes, "number": number, "rounds": a.rounds, "resolve": {}, "tree": {},
                     "build_s": {}, "notes": []}
    apps = {}
    tree_attr = None
    for n in sizes:
        t0 = time.perf_counter()
        apps[n] = build_app(n)
        results["build_s"][n] = time.perf_counter() - t0
        print(f"{n:>6} routes: registered in {results['build_s'][n] * 1000:.0f} ms", flush=True)
    # Interleave sizes round by round and keep each figure's minimum, so a burst of load from
    # elsewhere on the machine cannot land on one table size only.
    for rnd in range(a.rounds):
        for n in sizes:
            app = apps[n]
            resolve = getattr(app, "resolve", None)
            tree_attr, tree = find_tree(app)
            for label, (method, path) in lookups(n).items():
                if isinstance(path, list):  # one path after another (the cycling costs ~30 ns)
                    paths = itertools.cycle(path)
                    via_resolve = lambda: resolve(method, next(paths))  # noqa: E731
                    via_tree = lambda: tree.match(next(paths))  # noqa: E731
                else:
                    via_resolve = lambda: resolve(method, path)  # noqa: E731
                    via_tree = lambda: tree.match(path)  # noqa: E731
                if resolve is not None:
                    v = time_call(via_resolve, number)
                    row = results["resolve"].setdefault(label, {})
                    row[n] = min(row.get(n, v), v)
                if tree is not None:
                    v = time_call(via_tree, number)
                    row = results["tree"].setdefault(label, {})
                    row[n] = min(row.get(n, v), v)
        print(f"round {rnd + 1}/{a.rounds} done", flush=True)
    if not results["resolve"]:
        results["notes"].append("TODO: App has no resolve(method, path); only the tree was timed.")
    if tree_attr is None:
        results["notes"].append("TODO: no route tree exposed as app.tree/app.router/app._tree with match(path); "
                                "only app.resolve was timed.")
    else:
        results["tree_attr"] = tree_attr
    if not results["resolve"] and tree_attr is None:
        results["notes"].append("Nothing to time: neither app.resolve nor a route tree is exposed.")

    base = sizes[0]
    lines = ["# aioserve router lookup scaling", "",
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {procstats.machine_info().get('cpu_model', '?')}, "
             f"Python {sys.version.split()[0]}; minimum over {a.rounds} interleaved rounds x best of 3 x {number:,} lookups, ns per lookup; "
             f"`(N.NNx)` = ratio to the {base}-route table; `!` marks growth above {GROWTH_FLAG}x.", ""]
    flagged = []
    for kind, title in (("resolve", "`app.resolve(method, path)` (match + method + params dict)"),
                        ("tree", f"`app.{tree_attr}.match(path)` (tree only)")):
        table = results[kind]
        if not table:
            continue
        lines += [f"## {title}", "", "| lookup | " + " | ".join(f"{n:,} routes" for n in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        for label, row in table.items():
            cells = []
            for n in sizes:
                v = row.get(n)
                r = v / row[base] if v and row.get(base) else None
                mark = "!" if r and r > GROWTH_FLAG else ""
                if mark:
                    flagged.append(f"{kind} {label} @ {n}: {r:.2f}x")
                cells.append(f"{v:,.0f}" + (f" ({r:.2f}x){mark}" if r and n != base else ""))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Registration time: " + ", ".join(f"{n:,} routes {s * 1000:.0f} ms" for n, s in results["build_s"].items()), ""]
    if flagged:
        lines += ["**Lookup cost grew with the number of routes:** " + "; ".join(flagged), ""]
    else:
        lines += [f"No lookup grew more than {GROWTH_FLAG}x between {sizes[0]:,} and {sizes[-1]:,} routes.", ""]
    for n in results["notes"]:
        lines.append(f"- {n}")
    md = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "router_scaling.md").write_text(md)
    results["flagged"] = flagged
    (out / "router_scaling.json").write_text(json.dumps(results, indent=1, default=str))
    print(md)
    print(f"wrote {out / 'router_scaling.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
