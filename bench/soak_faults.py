"""The faults the soak injects, in rotation, and when.

Each fault breaks one thing and puts it back at once (a restarted process is not waited
for, except Redis and gateways, which start in seconds): the service is expected to ride
through while the replacement comes up.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from dataclasses import dataclass

import redis

from bench.soak_stack import SoakStack

PAUSE_MILLISECONDS = 8000


def kill_worker(stack: SoakStack, turn: int) -> str:
    slot = turn % len(stack.workers)
    worker = stack.workers[slot]
    worker.kill()
    stack.start_worker(slot)
    return f"SIGKILL {worker.name}; started a replacement"


def terminate_worker(stack: SoakStack, turn: int) -> str:
    slot = turn % len(stack.workers)
    worker = stack.workers[slot]
    worker.popen.send_signal(signal.SIGTERM)
    stack.retire(worker)
    stack.start_worker(slot)
    return f"SIGTERM {worker.name} (warm shutdown); started a replacement"


def kill_gateway(stack: SoakStack, turn: int) -> str:
    slot = turn % len(stack.gateways)
    gateway = stack.gateways[slot]
    gateway.kill()
    stack.start_gateway(slot)
    return f"SIGKILL {gateway.name}; restarted on {gateway.url}"


def restart_redis(stack: SoakStack, turn: int) -> str:
    """SHUTDOWN, which fsyncs the append-only file, then start on the same files."""
    old = stack.redis
    redis.Redis(port=old.port, socket_timeout=10).shutdown()
    old.popen.wait(timeout=30)
    old.kill()
    stack.start_redis()
    return f"SHUTDOWN redis on port {old.port}; started it again on the same AOF"


def kill_redis(stack: SoakStack, turn: int) -> str:
    """SIGKILL: up to a second of writes not yet fsynced may be lost."""
    old = stack.redis
    old.kill()
    stack.start_redis()
    return f"SIGKILL redis on port {old.port}; started it again on the same AOF"


def pause_redis(stack: SoakStack, turn: int) -> str:
    with redis.Redis(port=stack.redis.port, socket_timeout=10) as client:
        client.execute_command("CLIENT", "PAUSE", PAUSE_MILLISECONDS, "ALL")
    return f"CLIENT PAUSE {PAUSE_MILLISECONDS} ALL"


Fault = Callable[[SoakStack, int], str]

FAULTS: dict[str, Fault] = {
    "worker-kill": kill_worker,
    "worker-term": terminate_worker,
    "gateway-kill": kill_gateway,
    "redis-restart": restart_redis,
    "redis-pause": pause_redis,
    "redis-kill": kill_redis,
}


@dataclass(frozen=True)
class Scheduled:
    at_s: float  # seconds after the load started
    name: str
    turn: int  # how many faults of this kind came before: picks which process


def schedule(
    names: list[str], duration_s: float, gap_s: tuple[float, float], rng: random.Random
) -> list[Scheduled]:
    """The faults of a run: ``names`` in rotation, each after a gap drawn from ``gap_s``."""
    plan: list[Scheduled] = []
    turns: dict[str, int] = {}
    at = rng.uniform(*gap_s)
    while names and at < duration_s:
        name = names[len(plan) % len(names)]
        plan.append(Scheduled(round(at, 3), name, turns.get(name, 0)))
        turns[name] = turns.get(name, 0) + 1
        at += rng.uniform(*gap_s)
    return plan


@dataclass(frozen=True)
class FaultRecord:
    at_s: float
    name: str
    detail: str
    took_s: float
