"""The benchmark's record of the cores: real processes read from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cpu_use import CoreWatch, ThreadTimes, TreeTimes, descendants, use_between

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")

# Burns CPU seconds, starts a child that burns as many, says so, then sleeps until killed.
SPINNER = """
import subprocess, sys, time
def burn(seconds):
    began = time.process_time()
    while time.process_time() - began < seconds:
        pass
child = None
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", ""], stdout=subprocess.PIPE)
burn(0.3)
if child is not None:
    child.stdout.readline()
print("done", flush=True)
time.sleep(60)
"""


def test_a_tree_counts_its_children_and_the_client_counts_only_itself() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SPINNER, "parent", SPINNER], stdout=subprocess.PIPE, text=True
    )
    try:
        watch = CoreWatch({"server": parent.pid})
        began = time.perf_counter()
        watch.start()
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "done"
        cores = watch.stop()
        wall = time.perf_counter() - began
    finally:
        for pid in descendants(parent.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()
    server, client = cores["server"], cores["client"]
    # Two processes burnt 0.3 s each (less whatever they burnt before the first snapshot).
    assert server.cpu_pct * wall / 100 > 0.45
    # The busiest thread is one of them: about half the tree's time, never all of it.
    assert server.busiest_cpu_pct < server.cpu_pct * 0.8
    # This process only waited on a pipe; its children are not its own time.
    assert client.cpu_pct * wall / 100 < 0.2


def test_waits_and_the_busiest_thread_come_from_the_threads_present_at_both_ends() -> None:
    before = TreeTimes(1.0, {1: ThreadTimes(0.5, 0.1), 2: ThreadTimes(0.5, 0.0), 3: ThreadTimes(0.0, 0.0)})
    after = TreeTimes(2.5, {1: ThreadTimes(0.7, 0.3), 2: ThreadTimes(1.5, 0.2)})
    use = use_between(before, after, wall_s=2.0)
    assert use.cpu_pct == pytest.approx(75.0)  # the process's own total, ended thread 3 included
    assert use.wait_pct == pytest.approx(20.0)  # (0.2 + 0.2) s of 2 s
    assert use.busiest_cpu_pct == pytest.approx(50.0)  # thread 2: 1.0 s
    assert use.busiest_wait_pct == pytest.approx(10.0)


def test_no_scheduler_statistics_means_no_wait_figures() -> None:
    before = TreeTimes(0.0, {1: ThreadTimes(0.0, None)})
    after = TreeTimes(1.0, {1: ThreadTimes(1.0, None)})
    use = use_between(before, after, wall_s=1.0)
    assert use.wait_pct is None and use.busiest_wait_pct is None
    assert use.busiest_cpu_pct == pytest.approx(100.0)
