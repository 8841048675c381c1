"""How many threads torch uses when the model runs on the CPU."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads(setting: int, cores: int) -> int:
    """The setting when it is given; otherwise every core but one.

    The worker shares the machine with its gateway and Redis: measured on 2 cores, torch's
    default of one thread per core halved the worker's throughput (299 vs 561 tokens/s at
    16 streams), because the gateway and Redis then waited for the cores the worker held.
    """
    if setting > 0:
        return setting
    return max(1, cores - 1)


def configure_cpu_threads(setting: int, device_map: str) -> None:
    """Set torch's thread count when the model will run on the CPU (a GPU needs no change)."""
    on_cpu = device_map == "cpu" or not torch.cuda.is_available()
    if not on_cpu:
        return
    threads = cpu_threads(setting, available_cores())
    torch.set_num_threads(threads)
    log.info("torch uses %d CPU threads", threads)
