"""Profile aioserve's request hot path while wrk loads it; write the top functions to benchmarks/results/.

    python -m benchmarks.profile_hotpath [--tool auto|py-spy|cprofile] [--scenarios plaintext,json,users,echo,pipeline]
                                         [--duration 10] [--connections 64] [--loop uvloop]

py-spy (``pip install py-spy``, the default when installed) samples the running server from outside
(``--nonblocking``, 200 Hz, aggregated by function): little overhead, so the profile resembles the
real thing. cProfile runs the server in-process under the deterministic profiler: exact call counts,
but it slows every Python call several-fold, so the shares lean towards call-heavy code.

Writes, per scenario, ``profile-<tool>-<scenario>.txt`` (top functions by own time and by total time)
and the raw data (``.collapsed`` stacks for py-spy, usable with flamegraph.pl or speedscope;
``.pstats`` for cProfile, readable with ``python -m pstats``).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import harness
from .harness import CLIENT_CPU, ServerError, ServerProcess
from .servers.registry import BY_NAME, HOST, KEEPALIVE, PY, ServerSpec

TOP = 30


def _pyspy() -> str | None:
    cand = os.path.join(os.path.dirname(PY), "py-spy")
    return cand if os.path.exists(cand) else shutil.which("py-spy")


def _cprofile_spec(loop: str, pstats_path: Path) -> ServerSpec:
    """aioserve run in-process under cProfile (see _cprofile_main below)."""
    return ServerSpec(
        f"aioserve-{loop}-cprofile", 18101, "aioserve under cProfile",
        lambda port: [PY, "-m", "benchmarks.profile_hotpath", "--_serve-cprofile", str(pstats_path), "--",
                      "benchmarks.servers.aioserve_app:app", "--host", HOST, "--port", str(port),
                      "--loop", loop, "--no-access-log", "--timeout-keep-alive", str(KEEPALIVE)],
        requires=("aioserve",),
    )


def _cprofile_main(pstats_path: str, cli_args: list[str]) -> int:
    import cProfile
    import runpy

    prof = cProfile.Profile()
    sys.argv = ["aioserve"] + cli_args
    code = 0
    prof.enable()
    try:
        runpy.run_module("aioserve", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        pass
    finally:
        prof.disable()
        prof.dump_stats(pstats_path)
    return code


def summarise_collapsed(path: Path, top: int = TOP) -> str:
    """Own and total sample shares per function from py-spy's raw (collapsed stack) output."""
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    n = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        n += c
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        own[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    if not n:
        return "no samples (is the server process a Python process py-spy can read?)\n"
    out = [f"{n} samples", "", f"Top {top} by own time (leaf frame):", "  own%  total%  function"]
    for f, c in own.most_common(top):
        out.append(f"{100 * c / n:6.1f} {100 * total[f] / n:6.1f}  {f}")
    out += ["", f"Top {top} by total time (on the stack):", "total%   own%  function"]
    for f, c in total.most_common(top):
        out.append(f"{100 * c / n:6.1f} {100 * own[f] / n:6.1f}  {f}")
    return "\n".join(out) + "\n"


def summarise_pstats(path: Path, top: int = TOP) -> str:
    import io
    import pstats

    buf = io.StringIO()
    st = pstats.Stats(str(path), stream=buf)
    st.strip_dirs()
    buf.write(f"Top {top} by own time (tottime):\n")
    st.sort_stats("tottime").print_stats(top)
    buf.write(f"\nTop {top} by cumulative time:\n")
    st.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--_serve-cprofile":  # internal: the profiled server process
        sep = argv.index("--")
        return _cprofile_main(argv[1], argv[sep + 1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_hotpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tool", choices=["auto", "py-spy", "cprofile"], default="auto")
    p.add_argument("--scenarios", default="plaintext,json,users,echo,pipeline")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--quick", action="store_true", help="--duration 3")
    p.add_argument("--out", default=str(harness.RESULTS_DIR))
    a = p.parse_args(argv)
    if a.quick:
        a.duration = 3
    tool = a.tool
    if tool == "auto":
        tool = "py-spy" if _pyspy() else "cprofile"
    if tool == "py-spy" and not _pyspy():
        print("py-spy is not installed: pip install py-spy (or use --tool cprofile)", file=sys.stderr)
        return 2
    scenarios = [s for s in a.scenarios.split(",") if s]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs" / ("profile-" + time.strftime("%Y%m%d-%H%M%S"))
    harness.install_cleanup()
    harness.pin_self()
    written = []
    try:
        for sc in scenarios:
            stem = out / f"profile-{tool}-{sc}"
            if tool == "cprofile":
                raw = stem.with_suffix(".pstats")
                if raw.exists():
                    raw.unlink()
                spec = _cprofile_spec(a.loop, raw)
            else:
                raw = stem.with_suffix(".collapsed")
                spec = BY_NAME[f"aioserve-{a.loop}"]
            sp = ServerProcess(spec, log_dir=log_dir)
            try:
                sp.start()
            except ServerError as e:
                print(f"could not start aioserve: {e}", file=sys.stderr)
                return 1
            try:
                harness.run_wrk(sp.url, sc, a.connections, 1)  # warm-up
                spy = None
                if tool == "py-spy":
                    argv_spy = [_pyspy(), "record", "--nonblocking", "-F", "-r", "200", "-f", "raw",
                                "-d", str(a.duration), "-o", str(raw), "-p", str(sp.proc.pid)]
                    if harness.can_pin():
                        argv_spy = ["taskset", "-c", str(CLIENT_CPU)] + argv_spy
                    spy = subprocess.Popen(argv_spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           start_new_session=True)
                    harness._LIVE[spy.pid] = spy
                w = harness.run_wrk(sp.url, sc, a.connections, a.duration)
                if spy is not None:
                    try:
                        _, err = spy.communicate(timeout=15)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        _, err = spy.communicate()
                    harness._LIVE.pop(spy.pid, None)
                    if spy.returncode != 0:
                        print(f"py-spy failed: {err.decode(errors='replace')[-400:]}", file=sys.stderr)
            finally:
                sp.stop()  # cProfile server dumps its stats on SIGTERM's graceful shutdown
            head = (f"aioserve {harness.git_revision() or ''} --loop {a.loop}, scenario {sc} ({harness.SCENARIOS[sc]}), {a.connections} connections, "
                    f"{a.duration} s, profiled with {tool}: {w.rps:,.0f} req/s under the profiler, "
                    f"{w.errors} errors\n\n")
            if not raw.exists():
                body = f"no profile data written ({raw.name} missing); server log tail:\n{sp.log_tail()}\n"
            else:
                body = summarise_collapsed(raw) if tool == "py-spy" else summarise_pstats(raw)
            stem.with_suffix(".txt").write_text(head + body)
            written.append(stem.with_suffix(".txt"))
            print(head + "\n".join(body.splitlines()[:22]) + "\n...\n", flush=True)
    finally:
        harness.kill_all()
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
