"""The soak's service: Redis with an append-only file, gateways and workers, kept running.

Every process can be killed and started again in place: Redis on the same port with the
same data directory, each gateway on the same port, so that clients keep their addresses.
A supervisor restarts whatever exits without being told to, and records it: a process
that dies on its own under faults is a finding of the soak.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.processes import Gateway, Process, RedisServer, Worker, free_port, stack_env, wait_until

log = logging.getLogger(__name__)

# How long a worker told to stop (SIGTERM) may take to finish its jobs before it is killed.
RETIRE_SECONDS = 60.0
WORKER_READY_SECONDS = 120.0

_P = TypeVar("_P", bound=Process)


# A large append-only file takes a while to read back after a restart.
REDIS_READY_SECONDS = 60.0


class PinnedGateway(Gateway):
    """A gateway on a port chosen once, so that a restarted one has the same address."""

    def __init__(self, env: dict[str, str], port: int, name: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        Process.__init__(
            self, name, [sys.executable, "-m", "api"], {**env, "PORT": str(port), "HOST": "127.0.0.1"}
        )
        self.wait_or_stop(self._healthy, 60, f"gateway on {self.url}")


@dataclass(frozen=True)
class StackShape:
    model_dir: Path
    gateways: int
    workers: int
    worker_max_batch: int
    lease_seconds: float


@dataclass(frozen=True)
class ExitRecord:
    """A process that exited without being told to."""

    at_s: float
    process: str
    returncode: int | None
    log: str


@dataclass
class SoakStack:
    """The running processes; every change to them happens under ``lock``."""

    shape: StackShape
    data_dir: Path
    redis: RedisServer
    gateway_ports: list[int]
    gateways: list[PinnedGateway] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    retiring: list[tuple[Worker, float]] = field(default_factory=list)
    exits: list[ExitRecord] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    clock: Callable[[], float] = time.monotonic
    epoch: float = 0.0  # the clock's reading when the load started
    _starts: int = 0

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.gateway_ports]

    def env(self) -> dict[str, str]:
        return stack_env(
            self.redis.url(),
            MODEL_REPO_ID=str(self.shape.model_dir),
            WORKER_LEASE_SECONDS=f"{self.shape.lease_seconds:g}",
            WORKER_MAX_BATCH=str(self.shape.worker_max_batch),
        )

    def _next(self) -> int:
        self._starts += 1
        return self._starts

    def start_redis(self) -> None:
        self.redis = self.redis.restarted()

    def start_gateway(self, slot: int) -> None:
        gateway = PinnedGateway(self.env(), self.gateway_ports[slot], f"soak-gateway{slot}-{self._next()}")
        self._place(self.gateways, slot, gateway)

    def start_worker(self, slot: int) -> None:
        self._place(self.workers, slot, Worker(self.env(), name=f"soak-worker{slot}"))

    @staticmethod
    def _place(processes: list[_P], slot: int, process: _P) -> None:
        if slot < len(processes):
            processes[slot] = process
        else:
            processes.append(process)

    def retire(self, worker: Worker) -> None:
        """A worker sent SIGTERM: let it finish its jobs, but not forever."""
        self.retiring.append((worker, self.clock() + RETIRE_SECONDS))

    def supervise(self) -> None:
        """Restart whatever died on its own; kill retired workers that overstay."""
        with self.lock:
            if not self.redis.alive:
                self._record_exit(self.redis)
                self.start_redis()
            for slot, gateway in enumerate(self.gateways):
                if not gateway.alive:
                    self._record_exit(gateway)
                    self.start_gateway(slot)
            for slot, worker in enumerate(self.workers):
                if not worker.alive:
                    self._record_exit(worker)
                    self.start_worker(slot)
            still: list[tuple[Worker, float]] = []
            for worker, deadline in self.retiring:
                if worker.alive and self.clock() < deadline:
                    still.append((worker, deadline))
                else:
                    worker.kill()  # reaps it (and closes its log) if it already exited
            self.retiring = still

    def _record_exit(self, process: Process) -> None:
        code = process.popen.returncode
        log.warning("%s exited on its own (code %s); restarting it", process.name, code)
        self.exits.append(
            ExitRecord(round(self.clock() - self.epoch, 1), process.name, code, str(process.log_path))
        )
        process.kill()

    def wait_for_workers(self, timeout: float = WORKER_READY_SECONDS) -> None:
        """Until every gateway counts all the workers as live."""

        def ready() -> bool:
            self.supervise()
            try:
                return all(int(str(g.health()["workers"])) >= len(self.workers) for g in self.gateways)
            except Exception:
                return False

        wait_until(ready, timeout, f"{len(self.workers)} live workers")

    def stop(self) -> None:
        with self.lock:
            processes: list[Process] = [*(w for w, _ in self.retiring), *self.workers, *self.gateways]
            for process in [*processes, self.redis]:
                process.stop()


@contextlib.contextmanager
def soak_stack(shape: StackShape) -> Iterator[SoakStack]:
    """Start everything, wait for the workers; stop everything on the way out."""
    with tempfile.TemporaryDirectory(prefix="soak-redis-") as data_dir:
        log.info(
            "starting redis-server (AOF in %s), %d gateways, %d workers",
            data_dir,
            shape.gateways,
            shape.workers,
        )
        stack = SoakStack(
            shape, Path(data_dir), RedisServer(free_port(), Path(data_dir), REDIS_READY_SECONDS), []
        )
        try:
            stack.gateway_ports = [free_port() for _ in range(shape.gateways)]
            for slot in range(shape.gateways):
                stack.start_gateway(slot)
            for slot in range(shape.workers):
                stack.start_worker(slot)
            stack.wait_for_workers()
            yield stack
        finally:
            stack.stop()
