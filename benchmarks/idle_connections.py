"""Memory per idle keep-alive connection, and throughput as the connection count grows.

    python -m benchmarks.idle_connections [--servers ...] [--counts 1000,5000] [--throughput 10,100,1000]

Part 1, memory: for each server and each N, start a fresh server (pinned to CPU 0), read its RSS,
open N connections from this process (pinned to CPU 1), send one ``GET /plaintext`` on each and read
the whole response (so each is a real keep-alive connection, past the server's accept path and
its first request), wait, read the RSS again. Figure: (RSS after - RSS before) / N in KiB, with the
number of connections the server had closed by then (keep-alive timeouts are set to 120 s).

Part 2, throughput: plaintext req/s (and p99) with wrk at 10, 100 and 1,000 connections.

RLIMIT_NOFILE is raised to its hard limit first (the servers inherit it).
Writes benchmarks/results/idle_connections.{md,json}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from . import harness, procstats
from .harness import HOST, ServerError, ServerProcess
from .servers import registry


async def _open_one(port: int, sem: asyncio.Semaphore, timeout: float):
    req = f"GET /plaintext HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    async with sem:
        for attempt in range(3):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
                writer.write(req)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await asyncio.wait_for(reader.readexactly(length), timeout)
                if not head.startswith(b"HTTP/1.1 200"):
                    writer.close()
                    return None, f"status line {head[:20]!r}"
                return (reader, writer), None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                err = repr(e)
                await asyncio.sleep(0.05 * (attempt + 1))
        return None, err


async def hold_connections(sp: ServerProcess, n: int, settle: float, concurrency: int = 100,
                           timeout: float = 10.0) -> dict:
    pids = sp.pids(refresh=True)
    await asyncio.sleep(0.5)
    rss0 = procstats.tree_kb(pids, "VmRSS")
    sem = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()
    results = await asyncio.gather(*(_open_one(sp.port, sem, timeout) for _ in range(n)))
    open_s = time.monotonic() - t0
    conns = [c for c, _ in results if c is not None]
    errors = [e for c, e in results if c is None]
    await asyncio.sleep(settle)
    rss1 = procstats.tree_kb(sp.pids(refresh=True), "VmRSS")
    still_open = sum(1 for r, w in conns if not r.at_eof() and not w.transport.is_closing())
    cpu_idle0 = procstats.tree_cpu_seconds(pids)
    await asyncio.sleep(1.0)
    idle_cpu = procstats.tree_cpu_seconds(pids) - cpu_idle0  # CPU burnt in 1 s with N idle connections
    for r, w in conns:
        w.close()
    await asyncio.sleep(0.2)
    return {
        "n": n, "opened": len(conns), "failed": len(errors), "first_errors": errors[:3],
        "still_open": still_open, "open_seconds": open_s,
        "rss_before_mb": rss0 / 1024, "rss_after_mb": rss1 / 1024,
        "kib_per_conn": (rss1 - rss0) / max(1, still_open),
        "idle_cpu_share": idle_cpu,
        "server_alive": sp.alive(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle_connections", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="all")
    p.add_argument("--counts", default="1000,5000", help="idle connection counts")
    p.add_argument("--throughput", default="10,100,1000", help="wrk connection counts for part 2 ('' to skip)")
    p.add_argument("--duration", type=int, default=5, help="seconds per throughput run")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    p.add_argument("--quick", action="store_true", help="--duration 1 --settle 1")
    p.add_argument("--out", default=str(harness.RESULTS_DIR))
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.settle = 1, 1.0
    counts = [int(x) for x in a.counts.split(",") if x.strip()]
    tconns = [int(x) for x in a.throughput.split(",") if x.strip()]
    specs = registry.select(a.servers)
    harness.install_cleanup()
    harness.pin_self()
    nofile = harness.raise_nofile()
    need = max(counts + tconns + [0]) + 200
    if nofile < need:
        print(f"RLIMIT_NOFILE hard limit {nofile} is below {need}; raise it (ulimit -Hn) and retry", file=sys.stderr)
        return 2
    out = Path(a.out)
    log_dir = out / "logs" / ("idle-" + time.strftime("%Y%m%d-%H%M%S"))
    res: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "counts": counts, "throughput_conns": tconns,
                 "memory": {}, "throughput": {}, "skipped": {}, "versions": harness.versions()}
    try:
        for spec in specs:
            missing = spec.missing()
            if missing:
                res["skipped"][spec.name] = f"not installed: {', '.join(missing)}"
                continue
            for n in counts:
                sp = ServerProcess(spec, log_dir=log_dir)
                try:
                    sp.start()
                    r = asyncio.run(hold_connections(sp, n, a.settle))
                except ServerError as e:
                    res["skipped"][spec.name] = str(e).splitlines()[0]
                    break
                finally:
                    sp.stop()
                if not r["server_alive"]:
                    r["log_tail"] = sp.log_tail(8)
                res["memory"].setdefault(spec.name, {})[n] = r
                print(f"{spec.name:18s} {n:5d} idle: {r['kib_per_conn']:6.1f} KiB/conn "
                      f"(rss {r['rss_before_mb']:.1f} -> {r['rss_after_mb']:.1f} MB, opened {r['opened']}, "
                      f"still open {r['still_open']}, failed {r['failed']}, {r['open_seconds']:.1f}s to open, "
                      f"idle cpu {100 * r['idle_cpu_share']:.1f}%)", flush=True)
            if tconns and spec.name not in res["skipped"]:
                sp = ServerProcess(spec, log_dir=log_dir)
                try:
                    sp.start()
                    harness.run_wrk(sp.url, "plaintext", 64, 1)  # warm-up
                    for c in tconns:
                        w = harness.run_wrk(sp.url, "plaintext", c, a.duration)
                        res["throughput"].setdefault(spec.name, {})[c] = {
                            "rps": w.rps, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms, "errors": w.errors,
                            "wrk_cpu_share": w.wrk_cpu_share, "ok": w.ok, "error": w.error,
                            "server_alive": sp.alive()}
                        print(f"{spec.name:18s} {c:5d} conns: {w.rps:10,.0f} req/s p99 "
                              f"{(w.p99_ms or 0):.2f} ms err {w.errors} wrk {100 * w.wrk_cpu_share:.0f}%", flush=True)
                except ServerError as e:
                    res["skipped"][spec.name] = str(e).splitlines()[0]
                finally:
                    sp.stop()
    finally:
        harness.kill_all()

    ref = registry.REFERENCE
    L = [f"# Idle keep-alive connections and connection scaling: {res['started']}", "",
         "Memory: (server RSS after - before) / connections still open, KiB. Each connection has sent one "
         "request and read its response, then stays idle. `idle CPU` = server CPU share over 1 s with all of them open.", ""]
    if res["memory"]:
        L += ["| server | " + " | ".join(f"{n:,} idle: KiB/conn | RSS MB | still open | idle CPU" for n in counts) + " |",
              "|---|" + "---:|---:|---:|---:|" * len(counts)]
        for name, row in res["memory"].items():
            cells = []
            for n in counts:
                r = row.get(n)
                if r is None:
                    cells += ["", "", "", ""]
                    continue
                base = res["memory"].get(ref, {}).get(n)
                ratio = f" ({r['kib_per_conn'] / base['kib_per_conn']:.2f}x)" if base and base["kib_per_conn"] > 0 and name != ref else ""
                cells += [f"{r['kib_per_conn']:.1f}{ratio}", f"{r['rss_after_mb']:.1f}",
                          f"{r['still_open']}/{n}" + (f" ({r['failed']} failed)" if r["failed"] else "")
                          + ("" if r["server_alive"] else " DIED"), f"{100 * r['idle_cpu_share']:.1f}%"]
            L.append(f"| {name} | " + " | ".join(cells) + " |")
        L.append("")
    if res["throughput"]:
        L += ["## Plaintext throughput by connection count (req/s, p99 ms)", "",
              "| server | " + " | ".join(f"{c:,} conns" for c in tconns) + " |", "|---|" + "---:|" * len(tconns)]
        for name, row in res["throughput"].items():
            cells = []
            for c in tconns:
                r = row.get(c)
                if r is None:
                    cells.append("")
                    continue
                flags = ("*" if r["wrk_cpu_share"] > 0.9 else "") + ("!" if r["errors"] or not r["ok"] else "")
                p99 = "n/a" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}"
                cells.append(f"{r['rps']:,.0f} / {p99}{flags}" + (f" ({r['errors']} err)" if r["errors"] else ""))
            L.append(f"| {name} | " + " | ".join(cells) + " |")
        L += ["", "`*` wrk used >90% of its core; `!` errors.", ""]
    for name, why in res["skipped"].items():
        L.append(f"- {name} not run: {why}")
    md = "\n".join(L) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "idle_connections.md").write_text(md)
    (out / "idle_connections.json").write_text(json.dumps(res, indent=1, default=str))
    print(md)
    print(f"wrote {out / 'idle_connections.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
