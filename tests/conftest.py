"""Fixtures: a real redis-server, the tiny checkpoint, real gateway and worker processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import openai
import pytest
import redis
from redis import Redis

from tests.media import MediaServer
from tests.processes import DATABASES, ROOT, TINY_MODEL_DIR, Gateway, RedisServer, Worker, stack_env


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_model() -> str:
    if not (TINY_MODEL_DIR / "model.safetensors").exists():
        subprocess.run(
            [sys.executable, "-m", "worker.tiny_checkpoint", str(TINY_MODEL_DIR)], cwd=ROOT, check=True
        )
    return str(TINY_MODEL_DIR)


@dataclass
class Stack:
    """Redis (one database of the shared server), gateways and workers that use it."""

    redis_url: str
    env: dict[str, str]
    gateway: Gateway
    workers: list[Worker] = field(default_factory=list)
    extra_gateways: list[Gateway] = field(default_factory=list)

    @property
    def redis(self) -> Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    @property
    def rq_redis(self) -> Redis:
        """RQ stores compressed binary job data: it needs a connection that does not decode."""
        return redis.Redis.from_url(self.redis_url)

    def client(self, gateway: Gateway | None = None, api_key: str = "unused") -> openai.OpenAI:
        base = (gateway or self.gateway).url
        return openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0, timeout=60)

    def add_gateway(self) -> Gateway:
        gateway = Gateway(self.env)
        self.extra_gateways.append(gateway)
        return gateway

    def add_worker(self) -> Worker:
        worker = Worker(self.env)
        self.workers.append(worker)
        worker.wait_ready(self.gateway, workers=sum(w.alive for w in self.workers))
        return worker

    def stop(self) -> None:
        # All at once: each shuts down on its own, and waiting for one after another adds up.
        processes = [*self.workers, *self.extra_gateways, self.gateway]
        for process in processes:
            if process.alive:
                process.popen.terminate()
        for process in processes:
            process.stop()


# Databases from 16 on go to private stacks, each back to the pool when its test ends; the
# ones below belong to the shared stack and the integration tests' own fixtures.
_free_databases = list(range(DATABASES - 1, 15, -1))


def _start_stack(redis_server: RedisServer, db: int, workers: int, **overrides: str) -> Stack:
    url = redis_server.url(db)
    redis.Redis.from_url(url).flushdb()
    env = stack_env(url, **overrides)
    stack = Stack(url, env, Gateway(env))
    try:
        # Started together, then waited for: each load takes seconds of its own.
        stack.workers = [Worker(env) for _ in range(workers)]
        for worker in stack.workers:
            worker.wait_ready(stack.gateway, workers=workers)
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="session")
def stack(redis_server: RedisServer, tiny_model: str) -> Iterator[Stack]:
    """The shared stack: one gateway and one worker on database 0."""
    shared = _start_stack(redis_server, 0, workers=1)
    yield shared
    shared.stop()


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(redis_server: RedisServer, tiny_model: str) -> Iterator[StackFactory]:
    """A private stack (own Redis database) for tests that kill processes or change settings."""
    yield from _private_stacks(redis_server)


@pytest.fixture(scope="module")
def make_module_stack(redis_server: RedisServer, tiny_model: str) -> Iterator[StackFactory]:
    """Private stacks that the tests of one module share (they must not kill its processes)."""
    yield from _private_stacks(redis_server)


def _private_stacks(redis_server: RedisServer) -> Iterator[StackFactory]:
    started: list[tuple[int, Stack]] = []

    def make(workers: int = 1, **overrides: str) -> Stack:
        assert _free_databases, "out of Redis databases"
        db = _free_databases.pop()
        try:
            started.append((db, _start_stack(redis_server, db, workers, **overrides)))
        except BaseException:
            _free_databases.append(db)
            raise
        return started[-1][1]

    yield make
    for db, private in started:
        private.stop()
        _free_databases.append(db)


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return stack.client()


@pytest.fixture(scope="session")
def media_server() -> Iterator[MediaServer]:
    """A local HTTP server for media URLs (the stacks' workers may reach 127.0.0.1)."""
    server = MediaServer()
    yield server
    server.stop()
