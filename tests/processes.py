"""Real processes for the tests: redis-server, gateways and workers on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL_DIR = ROOT / ".cache" / "tiny-qwen3-vl"
LOG_DIR = ROOT / ".cache" / "test-logs"
# Databases of a test redis-server: the shared stack uses 0, the in-process tests some below
# 16, and each private stack one from 16 on.
DATABASES = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """A child process whose output goes to a log file under .cache/test-logs."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_or_stop(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until the process is ready; stop it if it never gets there or the wait is cut short."""
        try:
            wait_until(condition, timeout, what)
        except BaseException:
            self.stop()
            raise

    def answers_health(self, url: str, name: str) -> bool:
        """Whether ``GET {url}/health`` says it is ready; an error if the process exited."""
        if not self.alive:
            raise RuntimeError(f"{name} exited:\n{self.log_tail()}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """Like a crash: SIGKILL, no chance to clean up."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.alive:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()


class RedisServer(Process):
    """A redis-server on a free port; with ``data_dir``, persistent as compose runs it (AOF)."""

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, ready_seconds: float = 10
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/bootstrap.sh")
        persistence = ["--save", "", "--appendonly", "no"]
        if data_dir is not None:
            persistence = [
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(data_dir),
            ]
        super().__init__(
            f"redis-{self.port}-{time.monotonic_ns()}",
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--databases",
                str(DATABASES),
                *persistence,
            ],
        )
        # Answering PING, not LOADING, means the append-only file has been read back.
        self.ready_seconds = ready_seconds
        self.wait_or_stop(self._answers, ready_seconds, "redis-server")

    def restarted(self) -> RedisServer:
        """The same server started again (after ``stop``), from its own files."""
        return RedisServer(self.port, self.data_dir, self.ready_seconds)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def stack_env(redis_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "MODEL_REPO_ID": str(TINY_MODEL_DIR),
        "DEVICE_MAP": "cpu",
        "TORCH_DTYPE": "float32",
        "WORKER_LEASE_SECONDS": "2",
        "SESSIONS_TTL_SECONDS": "600",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "API_KEYS": "",
        "PYTHONUNBUFFERED": "1",
        # The tests serve media from a local HTTP server, which the worker must be allowed to reach.
        "ALLOWED_MEDIA_HOSTS": "127.0.0.1",
        "MEDIA_FETCH_TIMEOUT_SECONDS": "3",
        # Several workers share this host: none serves metrics unless a test gives it a port.
        "WORKER_METRICS_PORT": "0",
    }
    env.update(overrides)
    return env


class Gateway(Process):
    def __init__(self, env: dict[str, str], name: str = "gateway") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            f"{name}-{self.port}",
            [sys.executable, "-m", "api"],
            {**env, "PORT": str(self.port), "HOST": "127.0.0.1"},
        )
        self.wait_or_stop(self._healthy, 30, f"gateway on {self.url}")

    def _healthy(self) -> bool:
        return self.answers_health(self.url, "gateway")

    def health(self) -> dict[str, object]:
        body: dict[str, object] = httpx.get(f"{self.url}/health", timeout=5).json()
        return body


class Worker(Process):
    def __init__(self, env: dict[str, str], name: str = "worker") -> None:
        super().__init__(f"{name}-{os.getpid()}-{time.monotonic_ns()}", [sys.executable, "-m", "worker"], env)

    def wait_ready(self, gateway: Gateway, workers: int = 1) -> None:
        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"worker exited:\n{self.log_tail()}")
            return int(str(gateway.health()["workers"])) >= workers

        wait_until(ready, 90, "the worker to load the model")
