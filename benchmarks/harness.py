"""Shared machinery: start/stop pinned server processes, check their answers, run wrk and read its figures.

Every process started here is put in its own session (process group) and recorded; ``kill_all()``
runs at exit, on SIGTERM/SIGHUP/SIGINT, and from every ``finally``, so no server outlives the run.
All traffic goes to 127.0.0.1.
"""
from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import procstats
from .servers.payload import ECHO_BODY, EXTRA_ROUTES, JSON_OBJ
from .servers.registry import HOST, ServerSpec

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
LUA_DIR = BENCH_DIR / "lua"

SERVER_CPU = 0
CLIENT_CPU = 1

_LIVE: dict[int, "subprocess.Popen"] = {}  # pgid -> process, everything we started and have not reaped


# --------------------------------------------------------------------------- process hygiene

def baseline_tree(ref: str, *paths: str) -> str:
    """``aioserve`` (and ``paths``) as at git ``ref``, extracted into a temporary directory (removed at exit):
    a change is then measured before/after in the same run, under the same noise."""
    import io
    import tarfile
    root = tempfile.mkdtemp(prefix="aioserve-baseline-")
    atexit.register(shutil.rmtree, root, True)
    archive = subprocess.run(["git", "archive", ref, "aioserve", *paths], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root)
    return root


def baseline_boot(root: str) -> list[str]:
    """The command that runs ``python -m aioserve`` from ``root`` first on ``sys.path``."""
    return [sys.executable, "-c", f"import runpy, sys; sys.path.insert(0, {root!r}); "
            "runpy.run_module('aioserve', run_name='__main__', alter_sys=True)"]


def kill_all() -> None:
    """Terminate every process group this module started (SIGTERM, then SIGKILL after 3 s)."""
    for pgid, proc in list(_LIVE.items()):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3
    for pgid, proc in list(_LIVE.items()):
        try:
            proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        except ChildProcessError:
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # also reaps grandchildren (granian workers) left in the group
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=2)
        except Exception:
            pass
        _LIVE.pop(pgid, None)


def _on_signal(signum, frame):  # pragma: no cover - exercised by hand
    kill_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(kill_all)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_self(cpu: int = CLIENT_CPU) -> None:
    """Keep the harness off the server's core."""
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- servers

class ServerError(RuntimeError):
    pass


class ServerProcess:
    """One server, pinned to ``cpu``, stdout+stderr in a log file."""

    def __init__(self, spec: ServerSpec, cpu: int = SERVER_CPU, log_dir: Path | None = None, port: int | None = None):
        self.spec = spec
        self.cpu = cpu
        self.port = port or (spec.port if port_free(spec.port) else free_port())
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="aioserve-bench-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: subprocess.Popen | None = None
        self._pids: list[int] = []
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        argv = self.spec.argv(self.port)
        if can_pin():
            argv = ["taskset", "-c", str(self.cpu)] + argv
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.spec.extra_env)
        log = open(self.log_path, "ab")
        log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _LIVE[self.proc.pid] = self.proc
        self._pids = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.spec.name} exited with {self.proc.returncode} during start-up; "
                                  f"log tail:\n{self.log_tail()}")
            try:
                status, _, _ = http_request(self.port, "GET", "/plaintext", timeout=1.0)
                if status == 200:
                    time.sleep(0.3)  # let multi-process servers settle (granian spawns its worker)
                    self._pids = procstats.tree_pids(self.proc.pid)
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"{self.spec.name} did not answer GET /plaintext within {timeout:.0f}s; "
                          f"log tail:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self, refresh: bool = False) -> list[int]:
        if refresh or not self._pids:
            self._pids = procstats.tree_pids(self.proc.pid) if self.proc else []
        return self._pids

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 3)):  # politely, then not
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _LIVE.pop(pgid, None)

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


# --------------------------------------------------------------------------- tiny HTTP client (for checks)

def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None, timeout: float = 3.0) -> tuple[int, dict, bytes]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def count_pipelined(port: int, n: int = 16, path: str = "/plaintext", timeout: float = 3.0) -> int:
    """Send ``n`` pipelined GETs in one write; return how many complete 200 responses come back."""
    import httptools

    done = {"n": 0, "ok": 0}

    class P:
        def on_message_complete(self):
            done["n"] += 1

    parser = httptools.HttpResponseParser(P())
    req = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode() * n
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(req)
        deadline = time.monotonic() + timeout
        while done["n"] < n and time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            parser.feed_data(data)
            if parser.get_status_code() != 200:
                break
    return done["n"]


def validate(port: int) -> list[str]:
    """Check that a server implements the benchmark endpoints; returns a list of problems (empty = fine)."""
    problems: list[str] = []

    def check(label, cond, detail):
        if not cond:
            problems.append(f"{label}: {detail}")

    try:
        st, h, b = http_request(port, "GET", "/plaintext")
        check("GET /plaintext", st == 200 and b == b"Hello, World!" and h.get("content-type", "").startswith("text/plain"),
              f"status={st} ctype={h.get('content-type')} body={b[:60]!r}")
        st, h, b = http_request(port, "GET", "/json")
        ok = st == 200 and "json" in h.get("content-type", "")
        try:
            ok = ok and json.loads(b) == JSON_OBJ
        except ValueError:
            ok = False
        check("GET /json", ok, f"status={st} ctype={h.get('content-type')} body={b[:60]!r}")
        st, h, b = http_request(port, "GET", "/users/4242")
        check("GET /users/4242", st == 200 and b.replace(b" ", b"") == b'{"id":4242}', f"status={st} body={b[:60]!r}")
        last = EXTRA_ROUTES - 1
        st, h, b = http_request(port, "GET", f"/r{last}/7/x")
        check(f"GET /r{last}/7/x", st == 200 and b"7" in b, f"status={st} body={b[:60]!r}")
        st, h, b = http_request(port, "GET", "/users/notanint")
        check("GET /users/notanint", st == 404, f"status={st} (expected 404)")
        st, h, b = http_request(port, "POST", "/echo", body=ECHO_BODY, headers={"Content-Type": "application/json"})
        check("POST /echo", st == 200 and b == ECHO_BODY, f"status={st} len={len(b)} body={b[:40]!r}")
        got = count_pipelined(port, 16)
        check("16 pipelined GET /plaintext", got == 16, f"{got}/16 responses")
    except OSError as e:
        problems.append(f"connection error: {e!r}")
    return problems


# --------------------------------------------------------------------------- wrk

SCENARIOS = {
    "plaintext": "GET /plaintext",
    "json": "GET /json",
    "users": f"GET /users/{{id}} (registered after {EXTRA_ROUTES} other parameterised routes)",
    "echo": "POST /echo, 1 KiB JSON body echoed back",
    "pipeline": "GET /plaintext pipelined 16 deep",
}
PIPELINE_DEPTH = 16
USERS_PATH = "/users/4242"


def lua_script(scenario: str, rate_delay_ms: float | None = None) -> str:
    """The wrk script for ``scenario``: request set-up + optional fixed-rate delay + the report hook."""
    parts: list[str] = []
    if scenario in ("plaintext", "json"):
        parts.append(f'wrk.method = "GET"\nwrk.path = "/{scenario}"\n')
    elif scenario == "users":
        # One id, sent as wrk's static request: a Lua request() call per request slows wrk enough to
        # change how the server's reads batch (even the bare protocol then costs 50% more per request),
        # which measured wrk rather than routing. aioserve walks its tree for every request; Sanic's
        # router caches lookups by path (functools.lru_cache), which one id favours.
        parts.append(f'wrk.method = "GET"\nwrk.path = "{USERS_PATH}"\n')
    elif scenario == "echo":
        parts.append(
            'wrk.method = "POST"\nwrk.path = "/echo"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [==[{ECHO_BODY.decode()}]==]\n"
        )
    elif scenario == "pipeline":
        parts.append(
            "local batch\n"
            "init = function(args)\n"
            "  local r = {}\n"
            f"  for k = 1, {PIPELINE_DEPTH} do r[k] = wrk.format(\"GET\", \"/plaintext\") end\n"
            "  batch = table.concat(r)\n"
            "end\n"
            "request = function() return batch end\n"
        )
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    if rate_delay_ms is not None:
        # Each connection waits ``delay`` ms between a response and its next request; the fraction is
        # dithered so the mean wait is exact even though wrk's timer takes whole milliseconds.
        parts.append(
            f"local __d = {rate_delay_ms!r}\n"
            "delay = function() return math.floor(__d + math.random()) end\n"
        )
    parts.append((LUA_DIR / "report.lua").read_text())
    return "\n".join(parts)


@dataclass
class WrkResult:
    ok: bool
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = 0.0
    p90_ms: float | None = 0.0
    p99_ms: float | None = 0.0
    p999_ms: float | None = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0
    err_connect: int = 0
    err_read: int = 0
    err_write: int = 0
    err_timeout: int = 0
    err_status: int = 0
    wrk_cpu_s: float = 0.0
    wrk_wall_s: float = 0.0
    error: str = ""

    @property
    def errors(self) -> int:
        return self.err_connect + self.err_read + self.err_write + self.err_timeout + self.err_status

    @property
    def wrk_cpu_share(self) -> float:
        return self.wrk_cpu_s / self.wrk_wall_s if self.wrk_wall_s > 0 else 0.0


def run_wrk(url: str, scenario: str, connections: int, duration: int, *, rate_delay_ms: float | None = None,
            script_dir: Path | None = None, sampler=None, sample_every: float = 0.1,
            timeout_s: str = "5s") -> WrkResult:
    """Run wrk (one thread, pinned to the client CPU) and return its figures.

    ``sampler`` (optional) is called every ``sample_every`` seconds while wrk runs (used to poll server RSS).
    wrk's own CPU comes from the rusage that ``wait4`` returns for it: utime+stime over its wall time.
    """
    script_dir = script_dir or Path(tempfile.gettempdir())
    key = f"{scenario}-{'rate' if rate_delay_ms is not None else 'load'}-{os.getpid()}.lua"
    script = script_dir / key
    script.write_text(lua_script(scenario, rate_delay_ms))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(duration))}s", f"--timeout={timeout_s}",
            "-s", str(script), url]
    if can_pin():
        argv = ["taskset", "-c", str(CLIENT_CPU)] + argv
    out = tempfile.TemporaryFile()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    _LIVE[proc.pid] = proc
    hard_deadline = t0 + duration + 20
    rusage = None
    status = 0
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                rusage = ru
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > hard_deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                break
            if sampler is not None:
                sampler()
            time.sleep(sample_every)
    finally:
        _LIVE.pop(proc.pid, None)
    wall = time.monotonic() - t0
    out.seek(0)
    text = out.read().decode(errors="replace")
    out.close()
    res = WrkResult(ok=False, wrk_wall_s=wall, wrk_cpu_s=(rusage.ru_utime + rusage.ru_stime) if rusage else 0.0)
    line = next((ln for ln in text.splitlines() if ln.startswith("@@BENCH ")), None)
    if proc.returncode != 0 or line is None:
        res.error = f"wrk exit {proc.returncode}: {text.strip()[-300:]}"
        return res
    d = json.loads(line[len("@@BENCH "):])
    res.ok = True
    res.requests = int(d["requests"])
    res.duration_s = d["duration_us"] / 1e6
    res.rps = res.requests / res.duration_s if res.duration_s else 0.0
    # wrk 4.x "corrects" its histogram (stats_correct) before done() runs; when every recorded latency
    # exceeds the mean inter-request interval (pipelining: one latency per batch of 16) the synthetic
    # samples land below the histogram's min and percentile() returns 0. Report those as unknown.
    def pct(key):
        v = d[key]
        return v / 1000 if v > 0 or res.requests == 0 else None

    res.p50_ms, res.p90_ms, res.p99_ms, res.p999_ms = pct("p50_us"), pct("p90_us"), pct("p99_us"), pct("p999_us")
    res.mean_ms, res.max_ms = d["mean_us"] / 1000, d["max_us"] / 1000
    res.err_connect, res.err_read, res.err_write = d["connect"], d["read"], d["write"]
    res.err_timeout, res.err_status = d["timeout"], d["status"]
    return res


def git_revision() -> str | None:
    """The repository's HEAD commit (short), with '+dirty' when aioserve/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "aioserve"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    rev = git_revision()
    if rev:
        out["aioserve git"] = rev
    for dist in ("aioserve", "httptools", "uvloop", "orjson", "uvicorn", "starlette", "sanic", "aiohttp",
                 "granian", "socketify", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        out["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5).stdout.split()[1]
    except Exception:
        pass
    return out
