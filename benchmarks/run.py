"""Run every scenario against every server, alternating servers over several rounds.

    python -m benchmarks.run                 # full run (about 45 min with every peer installed)
    python -m benchmarks.run --quick         # smoke run: 1 round, 1 s per run, no warm-up
    python -m benchmarks.run --servers aioserve-uvloop,bare --scenarios plaintext,json --connections 64

Writes ``benchmarks/results/run-<timestamp>.{md,json,png}`` and copies them to ``latest.*``.
See benchmarks/README.md for what each figure means.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from . import harness, procstats
from .harness import SCENARIOS, ServerError, ServerProcess
from .servers import registry

LOAD, RATE = "load", "rate"
#: a run is "disturbed" when processes other than the server and wrk used more than this share of a core
DISTURB_OTHER = 0.20
DISTURB_STEAL = 0.05
WRK_CAP = 0.90


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke run (defaults: --rounds 1 --duration 1 --warmup 0)")
    p.add_argument("--duration", type=int, help="seconds per measured wrk run (whole seconds; default 5, quick 1)")
    p.add_argument("--warmup", type=int, help="seconds of unmeasured load before each run (default 1, quick 0)")
    p.add_argument("--rounds", type=int, help="rounds; servers alternate within each round (default 3, quick 1)")
    p.add_argument("--servers", default="all", help=f"comma list or 'all' ({','.join(registry.BY_NAME)})")
    p.add_argument("--scenarios", default="all", help=f"comma list or 'all' ({','.join(SCENARIOS)})")
    p.add_argument("--connections", default="1,64,256", help="comma list of wrk connection counts (default 1,64,256)")
    p.add_argument("--rate", type=int, default=5000, help="fixed request rate for the CPU-per-request runs (req/s)")
    p.add_argument("--rate-connections", type=int, default=10, help="connections for the fixed-rate runs")
    p.add_argument("--no-rate", action="store_true", help="skip the fixed-rate CPU-per-request runs")
    p.add_argument("--wait-quiet", type=float, help="wait up to this many seconds for an idle machine before each run (default 2, quick 0)")
    p.add_argument("--retry-disturbed", type=int, help="re-measure a disturbed run up to N times, keep the least disturbed (default 0)")
    p.add_argument("--max-minutes", type=float, default=90.0, help="hard bound: stop starting runs after this, write partial results")
    p.add_argument("--out", default=str(harness.RESULTS_DIR), help="results directory")
    p.add_argument("--tag", default="", help="suffix for the result file names")
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    p.add_argument("--baseline", metavar="REF", help="add aioserve as at git REF (uvloop) as one more server, "
                                                     "so a change is quoted before/after in the same rounds")
    a = p.parse_args(argv)
    if a.duration is None:
        a.duration = 1 if a.quick else 5
    if a.warmup is None:
        a.warmup = 0 if a.quick else 1
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if a.retry_disturbed is None:
        a.retry_disturbed = 0
    if a.wait_quiet is None:
        a.wait_quiet = 0.0 if a.quick else 2.0
    a.duration = max(1, a.duration)
    a.connections = [int(c) for c in a.connections.split(",") if c.strip()]
    if a.scenarios == "all":
        a.scenarios = list(SCENARIOS)
    else:
        a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
        bad = [s for s in a.scenarios if s not in SCENARIOS]
        if bad:
            p.error(f"unknown scenario(s) {bad}; known: {', '.join(SCENARIOS)}")
    try:
        a.server_specs = registry.select(a.servers)
    except ValueError as e:
        p.error(str(e))
    if a.baseline:
        a.server_specs.append(baseline_spec(a.baseline))
    return a


def baseline_spec(ref: str) -> registry.ServerSpec:
    """``aioserve-uvloop`` with aioserve's package and the benchmark app as at git ``ref``."""
    root = harness.baseline_tree(ref, "benchmarks/__init__.py", "benchmarks/servers/__init__.py",
                                 "benchmarks/servers/aioserve_app.py", "benchmarks/servers/payload.py")
    boot = harness.baseline_boot(root)
    current = registry.BY_NAME["aioserve-uvloop"].argv
    return registry.ServerSpec(f"aioserve@{ref}", 18099, f"aioserve as at {ref}, --loop uvloop",
                               lambda port: [*boot, *current(port)[3:]], requires=("aioserve", "uvloop"))


def build_matrix(args) -> list[tuple[str, str, int]]:
    """(mode, scenario, connections) items, in the order one round visits them."""
    items = []
    for sc in args.scenarios:
        for c in args.connections:
            if sc == "pipeline" and c == 1:
                continue  # a single pipelined connection measures batch latency, not the server
            items.append((LOAD, sc, c))
    if not args.no_rate:
        for sc in args.scenarios:
            if sc != "pipeline":
                items.append((RATE, sc, args.rate_connections))
    return items


# --------------------------------------------------------------------------- measuring one run

def quiet_check(wait: float) -> tuple[float, float]:
    """Busy share of the two benchmark CPUs over ~0.3 s (waiting up to ``wait`` s for it to drop)."""
    deadline = time.monotonic() + wait
    while True:
        c0 = procstats.CpuCounters()
        time.sleep(0.3)
        d = procstats.CpuCounters().delta(c0, [harness.SERVER_CPU, harness.CLIENT_CPU])
        busy = d["busy"] / d["wall"] if d["wall"] else 0.0
        if busy < DISTURB_OTHER or time.monotonic() >= deadline:
            return busy, time.monotonic() - (deadline - wait)
        time.sleep(0.5)


def measure(sp: ServerProcess, mode: str, scenario: str, conns: int, duration: int, rate_delay: float | None,
            others: list[ServerProcess]) -> dict:
    pids = sp.pids(refresh=True)
    hwm_ok = procstats.reset_hwm(pids)
    rss_peak = [procstats.tree_kb(pids, "VmRSS")]

    def sampler():
        rss_peak[0] = max(rss_peak[0], procstats.tree_kb(pids, "VmRSS"))

    other_pids = [p for o in others if o is not sp and o.alive() for p in o.pids()]
    cpus = [harness.SERVER_CPU, harness.CLIENT_CPU]
    c0, s0, me0 = procstats.CpuCounters(), procstats.tree_cpu_seconds(pids), procstats.self_cpu_seconds()
    o0 = procstats.tree_cpu_seconds(other_pids)
    snap0 = procstats.all_proc_cpu()
    res = harness.run_wrk(sp.url, scenario, conns, duration, rate_delay_ms=rate_delay, sampler=sampler,
                          sample_every=0.2)
    c1, s1, me1 = procstats.CpuCounters(), procstats.tree_cpu_seconds(pids), procstats.self_cpu_seconds()
    o1 = procstats.tree_cpu_seconds(other_pids)
    snap1 = procstats.all_proc_cpu()
    d = c1.delta(c0, cpus)
    wall = d["wall"] or 1e-9
    server_cpu = s1 - s0
    other = max(0.0, d["busy"] - server_cpu - res.wrk_cpu_s - (me1 - me0)) / wall
    if hwm_ok:
        rss_peak[0] = max(rss_peak[0], procstats.tree_kb(pids, "VmHWM"))
    rec = {
        "server": sp.spec.name, "mode": mode, "scenario": scenario, "connections": conns,
        "ok": res.ok, "error": res.error, "requests": res.requests, "rps": res.rps,
        "p50_ms": res.p50_ms, "p90_ms": res.p90_ms, "p99_ms": res.p99_ms, "p999_ms": res.p999_ms,
        "mean_ms": res.mean_ms, "max_ms": res.max_ms,
        "errors": res.errors, "err_connect": res.err_connect, "err_read": res.err_read,
        "err_write": res.err_write, "err_timeout": res.err_timeout, "err_status": res.err_status,
        "peak_rss_mb": rss_peak[0] / 1024, "hwm_reset": hwm_ok,
        "wrk_cpu_share": res.wrk_cpu_share, "server_cpu_s": server_cpu,
        "server_cpu_share": server_cpu / wall,
        "cpu_us_per_req": (server_cpu / res.requests * 1e6) if res.requests else None,
        "other_cpu_share": other, "other_servers_cpu_s": o1 - o0, "steal_share": d["steal"] / wall,
        "loadavg1": procstats.loadavg()[0],
        "server_alive_after": sp.alive(),
    }
    rec["wrk_capped"] = rec["wrk_cpu_share"] > WRK_CAP
    rec["disturbed"] = other > DISTURB_OTHER or rec["steal_share"] > DISTURB_STEAL
    # who else used CPU during the run (processes alive at both ends; short-lived ones only show in other_cpu_share)
    rec["top_other_processes"] = procstats.top_consumers(snap0, snap1, set(pids) | {os.getpid()}, wall)
    return rec


# --------------------------------------------------------------------------- aggregation & reports

FIGURES = ("rps", "p50_ms", "p99_ms", "p999_ms", "errors", "peak_rss_mb", "wrk_cpu_share", "cpu_us_per_req",
           "server_cpu_share", "other_cpu_share")


def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["mode"], r["scenario"], r["connections"], r["server"]), []).append(r)
    out = []
    for (mode, sc, c, server), rs in groups.items():
        good = [r for r in rs if r["ok"]]
        s = {"mode": mode, "scenario": sc, "connections": c, "server": server, "rounds": len(rs),
             "failed": len(rs) - len(good), "capped": sum(r["wrk_capped"] for r in good),
             "disturbed": sum(r["disturbed"] for r in good), "crashed": sum(not r["server_alive_after"] for r in rs),
             "errors_total": sum(r["errors"] for r in good)}
        for f in FIGURES:
            vals = [r[f] for r in good if r.get(f) is not None]
            s[f] = statistics.median(vals) if vals else None
        out.append(s)
    ref = registry.REFERENCE
    index = {(s["mode"], s["scenario"], s["connections"], s["server"]): s for s in out}
    for s in out:
        base = index.get((s["mode"], s["scenario"], s["connections"], ref))
        s["ratio"] = {}
        for f in ("rps", "p50_ms", "p99_ms", "p999_ms", "peak_rss_mb", "cpu_us_per_req"):
            if base and base.get(f) and s.get(f) is not None:
                s["ratio"][f] = s[f] / base[f]
    return out


def _flags(s: dict) -> str:
    f = []
    if s["failed"]:
        f.append(f"FAILED {s['failed']}/{s['rounds']}")
    if s["crashed"]:
        f.append(f"CRASH {s['crashed']}")
    if s["capped"]:
        f.append(f"wrk-capped {s['capped']}/{s['rounds']}")
    if s["disturbed"]:
        f.append(f"disturbed {s['disturbed']}/{s['rounds']}")
    if s["errors_total"]:
        f.append("errors")
    return ", ".join(f)


def _n(v, fmt="{:,.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _server_table(cols: list, server_order: list, by: dict, cell) -> list[str]:
    """A markdown table: one row per server, one column per (scenario, connections), ``cell(summary)`` in each."""
    lines = ["| server | " + " | ".join(f"{sc} @{c}" for sc, c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name in server_order:
        cells = [("" if (s := by.get((sc, c, name))) is None else cell(s)) for sc, c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _ratio(s: dict, f: str) -> str:
    r = s.get("ratio", {}).get(f)
    return "" if r is None else f" ({r:.2f}x)"


def render_markdown(meta: dict, summary: list[dict], server_order: list[str]) -> str:
    ref = registry.REFERENCE
    L = [f"# aioserve benchmark: {meta['started']}", ""]
    L.append(f"Command: `{meta['command']}`  ")
    m = meta["machine"]
    L.append(f"Machine: {m.get('cpu_model', '?')}, {m.get('cpus')} CPUs, kernel {m.get('kernel')}; "
             f"server pinned to CPU {harness.SERVER_CPU}, wrk (1 thread) to CPU {harness.CLIENT_CPU}"
             f"{'' if meta['pinned'] else ' (NOT pinned: taskset missing or < 2 CPUs)'}.  ")
    L.append(f"Settings: {meta['rounds']} round(s) x {meta['duration']} s per run, {meta['warmup']} s warm-up; "
             f"fixed-rate runs at {meta['rate']} req/s from {meta['rate_connections']} connections.  ")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  ")
    L.append(f"Elapsed: {meta.get('elapsed_s', 0):.0f} s{'; TRUNCATED: ' + meta['truncated'] if meta.get('truncated') else ''}.")
    L.append("")
    L.append(f"Every figure is the **median over rounds**. `(N.NNx)` is the ratio of that server's figure to "
             f"**{ref}**'s: for req/s above 1 means faster than aioserve; for latency, RSS and CPU per request "
             "above 1 means the peer costs more. Flags: `wrk-capped` = wrk used >90% of its core (the number is a "
             "floor for the server, not its limit); `disturbed` = other processes used >20% of a core during the "
             "run (shared machine); `errors` = socket errors or status >= 400.")
    L.append("")
    if meta.get("total_runs"):
        d = meta.get("disturbed_runs", 0)
        who = ", ".join(f"{k} ({v})" for k, v in list(meta.get("disturbers", {}).items())[:5])
        L.append(f"Disturbed runs: {d} of {meta['total_runs']}" + (f"; biggest other CPU user in those runs: {who}." if who else "."))
        L.append("")
    if meta.get("skipped"):
        L.append("## Servers not run")
        L.append("")
        for name, why in meta["skipped"].items():
            L.append(f"- **{name}**: {why}")
        L.append("")
    if any(meta.get("validation", {}).values()):
        L.append("## Validation problems (checked before measuring)")
        L.append("")
        for name, probs in meta["validation"].items():
            for pr in probs:
                L.append(f"- **{name}**: {pr}")
        L.append("")
    if meta.get("events"):
        L.append("## Events (crashes, restarts, failed runs)")
        L.append("")
        for e in meta["events"]:
            L.append(f"- {e}")
        L.append("")

    load = [s for s in summary if s["mode"] == LOAD]
    cols = []
    for s in load:
        k = (s["scenario"], s["connections"])
        if k not in cols:
            cols.append(k)
    by = {(s["scenario"], s["connections"], s["server"]): s for s in load}
    if cols:
        L.append("## Throughput (req/s, median; ratio to " + ref + ")")
        L.append("")
        def rps_cell(s: dict) -> str:
            mark = ("*" if s["capped"] else "") + ("~" if s["disturbed"] else "") + ("!" if s["errors_total"] or s["failed"] or s["crashed"] else "")
            return _n(s["rps"]) + _ratio(s, "rps") + mark

        L.extend(_server_table(cols, server_order, by, rps_cell))
        L.append("")
        L.append("`*` wrk-capped, `~` disturbed, `!` errors/failed/crash (details below).")
        L.append("")
        L.append(f"## Server CPU per request under load (µs, median; ratio to {ref})")
        L.append("")
        L.append("The same runs, as server CPU time (utime+stime) per request served. On a shared machine the "
                 "server gets only part of its core, which moves req/s a lot and this figure much less.")
        L.append("")
        L.extend(_server_table(cols, server_order, by,
                               lambda s: _n(s["cpu_us_per_req"], "{:,.1f}") + _ratio(s, "cpu_us_per_req")))
        L.append("")

    rate = [s for s in summary if s["mode"] == RATE]
    if rate:
        rcols = []
        for s in rate:
            if s["scenario"] not in rcols:
                rcols.append(s["scenario"])
        rby = {(s["scenario"], s["server"]): s for s in rate}
        L.append(f"## Server CPU time per request at a fixed rate (µs, median; ratio to {ref})")
        L.append("")
        L.append("utime+stime of the server's processes over the run divided by the requests served; "
                 "the figure that noise on the machine disturbs least. Achieved rate and p50/p99 latency in brackets.")
        L.append("")
        L.append("| server | " + " | ".join(rcols) + " |")
        L.append("|---|" + "---:|" * len(rcols))
        for name in server_order:
            cells = []
            for sc in rcols:
                s = rby.get((sc, name))
                if s is None:
                    cells.append("")
                    continue
                mark = "!" if s["errors_total"] or s["failed"] or s["crashed"] else ""
                cells.append(f"{_n(s['cpu_us_per_req'], '{:,.1f}')}{_ratio(s, 'cpu_us_per_req')}{mark} "
                             f"[{_n(s['rps'])}/s, {_n(s['p50_ms'], '{:.2f}')}/{_n(s['p99_ms'], '{:.2f}')} ms]")
            L.append(f"| {name} | " + " | ".join(cells) + " |")
        L.append("")

    if cols:
        L.append("## Details per scenario")
        L.append("")
        for sc, c in cols:
            L.append(f"### {sc} @ {c} connection{'s' if c != 1 else ''}: {SCENARIOS[sc]}")
            L.append("")
            L.append("| server | req/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MB | server CPU | wrk CPU | flags |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for name in server_order:
                s = by.get((sc, c, name))
                if s is None:
                    continue
                L.append(
                    f"| {name} | {_n(s['rps'])}{_ratio(s, 'rps')} | {_n(s['p50_ms'], '{:.2f}')}{_ratio(s, 'p50_ms')} "
                    f"| {_n(s['p99_ms'], '{:.2f}')}{_ratio(s, 'p99_ms')} | {_n(s['p999_ms'], '{:.2f}')} "
                    f"| {_n(s['errors'])} | {_n(s['peak_rss_mb'], '{:.1f}')} "
                    f"| {_n(s['server_cpu_share'] and 100 * s['server_cpu_share'], '{:.0f}%')} "
                    f"| {_n(s['wrk_cpu_share'] and 100 * s['wrk_cpu_share'], '{:.0f}%')} | {_flags(s)} |")
            L.append("")
    return "\n".join(L) + "\n"


def draw_chart(summary: list[dict], server_order: list[str], path: Path, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart"
    load = [s for s in summary if s["mode"] == LOAD]
    rate = [s for s in summary if s["mode"] == RATE]
    conns = sorted({s["connections"] for s in load})
    panels = [("rps", c) for c in conns] + ([("cpu", None)] if rate else [])
    if not panels:
        return "nothing to draw"
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.6 * len(panels)), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, (kind, c) in zip(axes[:, 0], panels):
        rows = [s for s in load if s["connections"] == c] if kind == "rps" else rate
        scen = []
        for s in rows:
            if s["scenario"] not in scen:
                scen.append(s["scenario"])
        names = [n for n in server_order if any(s["server"] == n for s in rows)]
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            vals = []
            for sc in scen:
                s = next((x for x in rows if x["server"] == name and x["scenario"] == sc), None)
                v = None if s is None else (s["rps"] if kind == "rps" else s["cpu_us_per_req"])
                vals.append(v or 0)
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(scen))]
            ax.bar(xs, vals, width, label=name, color=colors[i % len(colors)])
        ax.set_xticks(range(len(scen)))
        ax.set_xticklabels(scen)
        if kind == "rps":
            ax.set_ylabel("req/s (median, log)")
            ax.set_yscale("log")
            ax.set_title(f"Throughput at {c} connection{'s' if c != 1 else ''}")
        else:
            ax.set_ylabel("server CPU µs / request")
            ax.set_title("Server CPU per request at a fixed rate (lower is better)")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _aioserve_version() -> str | None:
    try:
        import aioserve

        return getattr(aioserve, "__version__", "?")
    except Exception as e:  # the package may be mid-rewrite
        return f"import failed: {type(e).__name__}"


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.install_cleanup()
    harness.pin_self()
    harness.raise_nofile()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    stamp = time.strftime("%Y%m%d-%H%M%S") + (f"-{args.tag}" if args.tag else "")
    log_dir = out_dir / "logs" / stamp
    t_start = time.monotonic()
    deadline = t_start + args.max_minutes * 60
    meta = {
        "started": started, "command": " ".join(["python -m benchmarks.run"] + (argv if argv is not None else sys.argv[1:])),
        "machine": procstats.machine_info(), "versions": harness.versions(), "pinned": harness.can_pin(),
        "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup, "rate": args.rate,
        "rate_connections": args.rate_connections, "connections": args.connections, "scenarios": args.scenarios,
        "reference": registry.REFERENCE, "skipped": {}, "validation": {}, "events": [], "truncated": False,
        "thresholds": {"wrk_capped_cpu_share": WRK_CAP, "disturbed_other_cpu_share": DISTURB_OTHER,
                       "disturbed_steal_share": DISTURB_STEAL},
    }
    v = _aioserve_version()
    if v:
        meta["versions"]["aioserve"] = v
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    matrix = build_matrix(args)
    servers: list[ServerProcess] = []
    runs: list[dict] = []
    interrupted = 0
    try:
        for spec in args.server_specs:
            missing = spec.missing()
            if missing:
                meta["skipped"][spec.name] = f"not installed: {', '.join(missing)}"
                print(f"skip {spec.name}: not installed ({', '.join(missing)})", flush=True)
                continue
            sp = ServerProcess(spec, log_dir=log_dir)
            try:
                sp.start()
            except ServerError as e:
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                meta["skipped"][spec.name] = "failed to start: " + lines[0] + (f" Last log line: `{lines[-1]}`" if len(lines) > 1 else "")
                print(f"skip {spec.name}: {e}", flush=True)
                continue
            probs = harness.validate(sp.port)
            meta["validation"][spec.name] = probs
            print(f"started {spec.name:18s} port {sp.port} pids {sp.pids()}"
                  f"{'  VALIDATION: ' + '; '.join(probs) if probs else ''}", flush=True)
            servers.append(sp)
        if not servers:
            print("no server could be started", file=sys.stderr)
            return 1
        order_names = [s.spec.name for s in servers]
        est = len(servers) * len(matrix) * args.rounds * (args.duration + args.warmup + 0.6)
        print(f"{len(servers)} servers x {len(matrix)} runs x {args.rounds} rounds: about {est / 60:.1f} min "
              f"(bounded by --max-minutes {args.max_minutes:g})", flush=True)
        if args.warmup:
            for sp in servers:
                harness.run_wrk(sp.url, "plaintext", 64, args.warmup)

        rate_delay_cal: dict[tuple[str, str], float] = {}
        for rnd in range(args.rounds):
            for k, (mode, sc, conns) in enumerate(matrix):
                shift = (rnd + k) % len(servers)
                for sp in servers[shift:] + servers[:shift]:
                    if time.monotonic() > deadline:
                        meta["truncated"] = "time bound (--max-minutes) reached"
                        raise TimeoutError
                    name = sp.spec.name
                    if not sp.alive():
                        meta["events"].append(f"{name} was dead before {mode} {sc}@{conns} round {rnd + 1} "
                                              f"(exit {sp.proc.returncode}); restarting. Log tail: "
                                              f"{sp.log_tail(5)!r}")
                        try:
                            sp.start()
                            sp.restarts += 1
                        except ServerError as e:
                            meta["events"].append(f"{name} restart failed: {str(e).splitlines()[0]}")
                            continue
                    busy_before, waited = quiet_check(args.wait_quiet)
                    delay = None
                    if mode == RATE:
                        # per-connection think time so that conns / (delay + service time) ~= rate
                        # first guess: wrk's millisecond timers overshoot by ~0.5 ms per wait (measured here)
                        delay = rate_delay_cal.get((name, sc), max(0.0, args.rate_connections * 1000.0 / args.rate - 0.5))
                    if args.warmup:
                        w = harness.run_wrk(sp.url, sc, conns, args.warmup, rate_delay_ms=delay)
                        if mode == RATE and w.ok and w.rps > 0:
                            # calibrate: the warm-up's achieved rate tells the service + timer overhead
                            overhead = args.rate_connections * 1000.0 / w.rps - delay
                            delay = max(0.0, args.rate_connections * 1000.0 / args.rate - overhead)
                            rate_delay_cal[(name, sc)] = delay
                    rec = None
                    for attempt in range(1 + args.retry_disturbed):
                        r = measure(sp, mode, sc, conns, args.duration, delay, servers)
                        r["attempts"] = attempt + 1
                        if rec is None or (r["ok"] and r["other_cpu_share"] < rec["other_cpu_share"]) or not rec["ok"]:
                            rec = r
                        if not r["disturbed"] or not r["ok"] or time.monotonic() > deadline:
                            break
                        quiet_check(args.wait_quiet)
                    rec["round"] = rnd + 1
                    rec["busy_before"] = busy_before
                    rec["rate_delay_ms"] = delay
                    rec["disturbed"] = rec["disturbed"] or busy_before > DISTURB_OTHER
                    runs.append(rec)
                    if not rec["ok"]:
                        meta["events"].append(f"{name} {mode} {sc}@{conns} round {rnd + 1}: {rec['error']}")
                    if not rec["server_alive_after"]:
                        meta["events"].append(f"{name} DIED during {mode} {sc}@{conns} round {rnd + 1}; log tail: "
                                              f"{sp.log_tail(8)!r}")
                    flags = ("C" if rec["wrk_capped"] else "") + ("D" if rec["disturbed"] else "") + \
                            ("E" if rec["errors"] else "")
                    extra = (f" cpu/req {rec['cpu_us_per_req']:.1f}us" if mode == RATE and rec["cpu_us_per_req"] else "")
                    if rec["disturbed"] and rec["top_other_processes"]:
                        flags += " (" + ", ".join(rec["top_other_processes"]) + ")"
                    print(f"[r{rnd + 1} {mode:4s} {sc:9s} c={conns:<4d}] {name:18s} {rec['rps']:>10,.0f} req/s "
                          f"p50 {_n(rec['p50_ms'], '{:7.2f}')} p99 {_n(rec['p99_ms'], '{:7.2f}')} p99.9 {_n(rec['p999_ms'], '{:7.2f}')} ms "
                          f"err {rec['errors']:<5d} rss {rec['peak_rss_mb']:6.1f}MB wrk {100 * rec['wrk_cpu_share']:3.0f}% "
                          f"other {100 * rec['other_cpu_share']:3.0f}%{extra} {flags}", flush=True)
    except TimeoutError:
        print("time bound reached: writing partial results", flush=True)
    except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C, or SIGTERM/SIGHUP via harness._on_signal
        meta["truncated"] = "interrupted"
        interrupted = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 130
        print("interrupted: writing partial results", flush=True)
    finally:
        for sp in servers:
            sp.stop()
        harness.kill_all()

    meta["elapsed_s"] = time.monotonic() - t_start
    meta["restarts"] = {sp.spec.name: sp.restarts for sp in servers if sp.restarts}
    summary = summarise(runs)
    disturbers: dict[str, int] = {}
    for r in runs:
        if r["disturbed"]:
            for t in r.get("top_other_processes", [])[:1]:
                comm = t.rsplit("[", 1)[0]
                disturbers[comm] = disturbers.get(comm, 0) + 1
    meta["disturbed_runs"] = sum(r["disturbed"] for r in runs)
    meta["total_runs"] = len(runs)
    meta["disturbers"] = dict(sorted(disturbers.items(), key=lambda kv: -kv[1]))
    order = [n for n in order_names]
    md = render_markdown(meta, summary, order)
    base = out_dir / f"run-{stamp}"
    base.with_suffix(".md").write_text(md)
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    written = [base.with_suffix(".md"), base.with_suffix(".json")]
    if not args.no_chart:
        err = draw_chart(summary, order, base.with_suffix(".png"), f"aioserve benchmark {started}")
        if err:
            print(err)
        else:
            written.append(base.with_suffix(".png"))
    for w in written:
        shutil.copyfile(w, out_dir / ("latest" + w.suffix))
    print()
    print(md)
    print("wrote " + ", ".join(str(w) for w in written) + " (and latest.*)")
    return interrupted


if __name__ == "__main__":
    sys.exit(main())
