"""CPU time and peak memory of server processes, from /proc (Linux only)."""

import os
import re
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """pid and every process below it (the workers of a multi-process server)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user time
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def reset_peak_rss(pids: list[int]) -> bool:
    """Resets VmHWM to the current RSS (writing 5 to clear_refs); False where not allowed."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss_bytes(pids: list[int]) -> int:
    """Sum of VmHWM (peak resident set) of the processes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


# --- database servers ------------------------------------------------------------

# A PostgreSQL client backend's process title: "postgres: [cluster: ]user database host(port) state".
PG_BACKEND_TITLE = re.compile(r"^postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


class DatabaseServer:
    """The CPU time a local database server spends for one database.

    kind "postgresql": the postmaster (pid) and every process below it (the
    checkpointer, WAL writer, autovacuum...), except the client backends of
    other databases, told apart by their process titles. kind "mysql": the
    whole server process (pid), every thread of it: it serves every database.
    Only processes alive at the end of a window are counted; the service keeps
    its connections open, so its backends are.
    """

    def __init__(self, kind: str, pid: int, database: str) -> None:
        if kind not in ("postgresql", "mysql"):
            raise ValueError(f"unknown database server kind {kind!r}")
        self.kind, self.pid, self.database = kind, pid, database

    def spec(self) -> str:
        """The server as one command-line argument (see parse)."""
        return f"{self.kind}:{self.pid}:{self.database}"

    @classmethod
    def parse(cls, spec: str) -> "DatabaseServer":
        kind, pid, database = spec.split(":", 2)
        return cls(kind, int(pid), database)

    def sample(self) -> dict[int, int]:
        """CPU clock ticks (utime + stime) of each process counted, by pid."""
        if self.kind == "mysql":
            return {self.pid: _ticks(self.pid) or 0}
        ticks = {}
        for pid in descendants(self.pid):
            title = _cmdline(pid)
            backend = PG_BACKEND_TITLE.match(title)
            if backend and backend.group(1) != self.database:
                continue  # a client of another database
            value = _ticks(pid)
            if value is not None:
                ticks[pid] = value
        return ticks

    @staticmethod
    def seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
        """CPU seconds used between two samples (a process new since the first counts whole)."""
        return sum(max(0, value - before.get(pid, 0)) for pid, value in after.items()) / CLOCK_TICKS


def _ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def thread_group(tid: int) -> int | None:
    """The process a thread belongs to (Tgid), or None when it is not on this machine."""
    try:
        for line in Path(f"/proc/{tid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return None
