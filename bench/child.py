"""Measurements that run in a child process of their own, with the model processes' settings.

The child prints one JSON object as its last line of output; this runs it and returns that
object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench.stack import Placement
from tests.processes import ROOT

TIMEOUT_SECONDS = 600


def run_child(module: str, args: list[str], placement: Placement, what: str) -> dict[str, Any]:
    """``python -m module args`` under the placement's environment; its last line, as JSON."""
    env = {**os.environ, **placement.env()}
    command = [sys.executable, "-m", module, *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    raw: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return raw
