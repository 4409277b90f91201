"""psutil-free readings from /proc: CPU time and memory of a process tree, machine CPU counters.

Linux only. Every function tolerates processes that vanish between two reads.
"""
from __future__ import annotations

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces/parens: split after the last ')'
    rest = raw[raw.rfind(")") + 2:].split()
    return rest  # rest[0] is field 3 (state)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0.0 if gone."""
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    # fields 14 and 15 (1-based) -> rest index 11, 12
    return (int(f[11]) + int(f[12])) / CLK_TCK


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f is not None:
            out[int(name)] = int(f[1])
    return out


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    parents = _ppid_map()
    if root not in parents:
        return []
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(pids: list[int]) -> float:
    return sum(proc_cpu_seconds(p) for p in pids)


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM, ...); 0 if gone or absent."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_kb(pids: list[int], field: str) -> int:
    return sum(status_kb(p, field) for p in pids)


def reset_hwm(pids: list[int]) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/PID/clear_refs``, Linux >= 4.0, needs ptrace rights)."""
    ok = True
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


class CpuCounters:
    """Per-CPU jiffies from /proc/stat: busy (user+nice+system), irq (irq+softirq), steal, total."""

    def __init__(self) -> None:
        self.t = time.monotonic()
        self.cpus: dict[int, tuple[int, int, int, int]] = {}
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    parts = line.split()
                    v = [int(x) for x in parts[1:]] + [0] * 10
                    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
                    total = user + nice + system + idle + iowait + irq + softirq + steal
                    self.cpus[int(parts[0][3:])] = (user + nice + system, irq + softirq, steal, total)

    def delta(self, earlier: "CpuCounters", cpus: list[int]) -> dict[str, float]:
        """Seconds of busy / irq / steal CPU on ``cpus`` since ``earlier``, plus the wall time."""
        out = {"busy": 0.0, "irq": 0.0, "steal": 0.0, "wall": self.t - earlier.t}
        for c in cpus:
            if c in self.cpus and c in earlier.cpus:
                a, b = self.cpus[c], earlier.cpus[c]
                out["busy"] += (a[0] - b[0]) / CLK_TCK
                out["irq"] += (a[1] - b[1]) / CLK_TCK
                out["steal"] += (a[2] - b[2]) / CLK_TCK
        return out


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as f:
        a, b, c = f.read().split()[:3]
    return float(a), float(b), float(c)


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def machine_info() -> dict:
    info: dict = {"cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["kernel"] = os.uname().release
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_kb"] = int(f.readline().split()[1])
    except OSError:
        pass
    return info


def all_proc_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (command name, utime+stime seconds) for every process."""
    out: dict[int, tuple[str, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue
        comm = raw[raw.find("(") + 1:raw.rfind(")")]
        rest = raw[raw.rfind(")") + 2:].split()
        out[int(name)] = (comm, (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return out


def top_consumers(before: dict, after: dict, exclude: set[int], wall: float, n: int = 3) -> list[str]:
    """The ``n`` processes (present in both snapshots, not excluded) that used the most CPU in between."""
    used = []
    for pid, (comm, cpu) in after.items():
        if pid in exclude or pid not in before:
            continue
        d = cpu - before[pid][1]
        if d > 0:
            used.append((d, pid, comm))
    used.sort(reverse=True)
    out = []
    for d, pid, comm in used[:n]:
        if wall <= 0:
            break
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            cmd = " ".join([os.path.basename(argv[0])] + argv[1:]).strip() if argv and argv[0] else ""
        except OSError:
            cmd = ""
        label = cmd[:60] if cmd and comm.startswith("python") else comm
        out.append(f"{label}[{pid}] {100 * d / wall:.0f}%")
    return out
