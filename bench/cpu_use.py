"""Where the machine's cores went during a level: each process's CPU, and its time waiting for one.

On a machine of two cores the model's process, the server's other processes, Redis and
the benchmark's own client all want a core at once after every decoding step. Tokens
per second alone cannot tell a slow step from a step that waited: the kernel can. From
``/proc`` (Linux), for each process tree named (a server's processes and their children):

- CPU: user and system time, in % of one core over the level's wall time;
- waiting: the time its threads were ready to run but had no core (the scheduler's run
  delay, ``/proc/PID/task/TID/schedstat``), in % of the wall time, summed over threads;
- its busiest thread (the model's engine, for both servers measured here): its CPU and
  its wait. That thread is what the tokens per second are made of.

Threads that end during the level take their own counts with them (RQ's job timers, for
one); their CPU is still in the process's total.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ThreadTimes:
    cpu_s: float
    wait_s: float | None  # None: the kernel keeps no scheduler statistics


@dataclass(frozen=True)
class TreeTimes:
    cpu_s: float
    threads: dict[int, ThreadTimes]  # by thread id


@dataclass(frozen=True)
class CpuUse:
    """One process tree over one level, in % of one core."""

    cpu_pct: float
    wait_pct: float | None
    busiest_cpu_pct: float
    busiest_wait_pct: float | None


def _stat_fields(path: Path) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return path.read_text().rsplit(")", 1)[1].split()


def _cpu_s(stat: Path) -> float:
    """User + system seconds from a process's or a thread's ``stat``."""
    fields = _stat_fields(stat)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_cpu_s(pid: int) -> float:
    """User + system seconds of the process, its ended threads included."""
    return _cpu_s(PROC / str(pid) / "stat")


def thread_times(pid: int) -> dict[int, ThreadTimes]:
    threads: dict[int, ThreadTimes] = {}
    for task in (PROC / str(pid) / "task").iterdir():
        try:
            cpu = _cpu_s(task / "stat")
            wait: float | None = None
            schedstat = task / "schedstat"
            if schedstat.exists():
                wait = int(schedstat.read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):  # the thread ended meanwhile
            continue
        threads[int(task.name)] = ThreadTimes(cpu, wait)
    return threads


def descendants(pid: int) -> list[int]:
    """The process and every process below it (a server's engine process, for one)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(entry / "stat")[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_times(pid: int, children: bool = True) -> TreeTimes:
    cpu, threads = 0.0, {}
    for member in descendants(pid) if children else [pid]:
        try:
            cpu += process_cpu_s(member)
            threads.update(thread_times(member))
        except OSError:  # ended meanwhile
            continue
    return TreeTimes(cpu, threads)


def use_between(before: TreeTimes, after: TreeTimes, wall_s: float) -> CpuUse:
    def pct(seconds: float) -> float:
        return 100 * seconds / wall_s if wall_s > 0 else 0.0

    deltas = [
        (after.threads[tid].cpu_s - times.cpu_s, _wait_delta(times, after.threads[tid]))
        for tid, times in before.threads.items()
        if tid in after.threads
    ]
    waits = [wait for _, wait in deltas if wait is not None]
    busiest_cpu, busiest_wait = max(deltas, default=(0.0, None), key=lambda delta: delta[0])
    return CpuUse(
        cpu_pct=pct(after.cpu_s - before.cpu_s),
        wait_pct=pct(sum(waits)) if waits else None,
        busiest_cpu_pct=pct(busiest_cpu),
        busiest_wait_pct=pct(busiest_wait) if busiest_wait is not None else None,
    )


def _wait_delta(before: ThreadTimes, after: ThreadTimes) -> float | None:
    if before.wait_s is None or after.wait_s is None:
        return None
    return after.wait_s - before.wait_s


class CoreWatch:
    """Snapshots of named process trees around a level: ``start()``, run it, ``stop()``.

    ``client`` names this process, watched without its children (the servers it started).
    """

    def __init__(self, processes: dict[str, int], client: str = "client") -> None:
        self._processes = {**processes, client: os.getpid()}
        self._client = client
        self._before: dict[str, TreeTimes] = {}
        self._began = 0.0

    @property
    def available(self) -> bool:
        return PROC.joinpath("self", "task").is_dir()

    def start(self) -> None:
        if self.available:
            self._before = {name: self._times(name, pid) for name, pid in self._processes.items()}
        self._began = time.perf_counter()

    def stop(self) -> dict[str, CpuUse]:
        wall = time.perf_counter() - self._began
        if not self._before:
            return {}
        return {
            name: use_between(self._before[name], self._times(name, pid), wall)
            for name, pid in self._processes.items()
        }

    def _times(self, name: str, pid: int) -> TreeTimes:
        return tree_times(pid, children=name != self._client)
