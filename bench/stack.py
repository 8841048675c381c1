"""Our service as real processes: redis-server, the gateway and one worker, on free ports."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import Target
from bench.workload import Workload
from tests.processes import TINY_MODEL_DIR, Gateway, RedisServer, Worker, stack_env

log = logging.getLogger(__name__)

NAME = "ours"


@dataclass(frozen=True)
class Placement:
    """Where and how every model process of the run computes."""

    model_dir: Path
    device: str
    dtype: str
    threads: int

    def env(self) -> dict[str, str]:
        return {
            "OMP_NUM_THREADS": str(self.threads),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }


@dataclass
class OurStack:
    redis: RedisServer
    gateway: Gateway
    worker: Worker

    def target(self) -> Target:
        return Target(NAME, self.gateway.url, "bench", ours_extra_body)

    def stop_worker(self) -> None:
        """Leave the gateway alone on the machine (for the relay measurements)."""
        self.worker.stop()


def ours_extra_body(workload: Workload, max_tokens: int) -> dict[str, Any]:
    # The API cannot disable the end-of-sequence stop; output is counted from usage instead.
    return {"top_k": workload.top_k, "stream_options": {"include_usage": True}}


# The end-of-sequence tokens of Qwen's tokenizer, banned so that a stream runs to max_tokens.
NO_EOS = {"151643": -100, "151645": -100}


def ours_full_length_body(workload: Workload, max_tokens: int) -> dict[str, Any]:
    """Our request fields, with the end of sequence banned: every stream has max_tokens tokens."""
    return {**ours_extra_body(workload, max_tokens), "logit_bias": NO_EOS}


def add_placement_args(parser: argparse.ArgumentParser) -> None:
    """The options that say where the model runs, for the benchmarks with a stack of their own."""
    add = parser.add_argument
    add("--model", type=Path, default=TINY_MODEL_DIR, help="checkpoint directory (default: the tiny one)")
    add("--device", default="cpu")
    add("--dtype", default="float32")
    add("--threads", type=int, default=1, help="OMP threads of the worker (default 1)")
    add("--json", type=Path, metavar="PATH", help="also write the figures as JSON to this path")


def placement_of(args: argparse.Namespace) -> Placement:
    return Placement(args.model, args.device, args.dtype, args.threads)


@contextlib.contextmanager
def our_stack(placement: Placement, max_batch: int = 64, **settings: str) -> Iterator[OurStack]:
    """Start everything; stop everything on the way out, whatever happened.

    The worker gets as many job slots as the highest concurrency level, so that every
    level measures batching rather than queueing. ``settings`` are further environment
    variables of the gateway and the worker.
    """
    with contextlib.ExitStack() as stack:
        log.info("starting redis-server, the gateway and a worker")
        redis = RedisServer()
        stack.callback(redis.stop)
        env = stack_env(
            redis.url(),
            MODEL_REPO_ID=str(placement.model_dir),
            DEVICE_MAP=placement.device,
            TORCH_DTYPE=placement.dtype,
            WORKER_LEASE_SECONDS="5",
            WORKER_MAX_BATCH=str(max_batch),
            # The relay measurements find where the gateway stops keeping up, not its admission limit.
            MAX_STREAMS_PER_GATEWAY="1000000",
            **placement.env(),
            **settings,
        )
        gateway = Gateway(env, name="bench-gateway")
        stack.callback(gateway.stop)
        worker = Worker(env, name="bench-worker")
        stack.callback(worker.stop)
        worker.wait_ready(gateway)
        yield OurStack(redis, gateway, worker)
