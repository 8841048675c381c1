"""``python -m bench slow-media``: text throughput while requests with media wait on downloads.

One stack (redis-server, a gateway, a worker). Phase A: closed-loop streaming text load for
a fixed time. Phase B: the same load while requests whose image URL points at a listener
that accepts and never answers are pending throughout, each holding a media job slot of the
worker. Requests with media have their own queue and job slots (shared/queueing.py), so
phase B's text tokens/s should match phase A's. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.held_media import HeldMedia
from bench.load import (
    READ_TIMEOUT_SECONDS,
    WARMUP_REQUESTS,
    Target,
    count_prefix_chunks,
    run_for,
    stream_once,
)
from bench.results import LevelResult
from bench.silent_listener import SilentListener
from bench.slow_media_report import PendingCheck, SlowMediaResult, render, write_json
from bench.sse import http_client
from bench.stack import Placement, our_stack
from bench.workload import DEFAULT_PROMPT, Workload
from tests.processes import LOG_DIR, TINY_MODEL_DIR

log = logging.getLogger(__name__)

MEDIA_START_SECONDS = 60.0
POLL_SECONDS = 0.5
# Between the job slots taking the media requests and their fetches connecting.
SETTLE_SECONDS = 2.0
# The media fetch deadline must outlast phase B by this much: the requests are sent before
# it starts and must still be waiting when its last text stream ends.
DEADLINE_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class SlowMediaPlan:
    placement: Placement
    workload: Workload
    clients: int
    duration_s: float
    media_requests: int
    max_batch: int
    media_deadline_s: float

    def settings(self) -> dict[str, Any]:
        p = self.placement
        return {
            "model": str(p.model_dir),
            "device": p.device,
            "dtype": p.dtype,
            "threads": p.threads,
            "cpus": os.cpu_count(),
            "prompt": self.workload.prompt,
            "max_tokens": self.workload.max_tokens,
            "sampling": "greedy",
            "clients": self.clients,
            "duration_s": self.duration_s,
            "media_requests": self.media_requests,
            "max_batch": self.max_batch,
            "media_deadline_s": self.media_deadline_s,
        }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench slow-media", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--duration", type=float, default=30.0, help="seconds of text load per phase (default 30)")
    add("--clients", type=_positive, default=8, help="concurrent text streams (default 8)")
    add("--max-tokens", type=_positive, default=64, help="output tokens per text request (default 64)")
    add("--media-requests", type=_positive, default=16, help="requests with a silent image URL (default 16)")
    add("--max-batch", type=_positive, default=16, help="WORKER_MAX_BATCH of the worker (default 16)")
    add(
        "--media-deadline",
        type=float,
        default=120.0,
        help="MEDIA_FETCH_DEADLINE_SECONDS and MEDIA_FETCH_TIMEOUT_SECONDS of the worker (default 120)",
    )
    add("--prompt", default=DEFAULT_PROMPT, help="the user message of every request")
    add("--model", type=Path, default=TINY_MODEL_DIR, help="checkpoint directory (default: the tiny one)")
    add("--device", default="cpu", help="device of the worker (default cpu)")
    add("--dtype", default="float32", help="weight dtype (default float32)")
    add("--threads", type=_positive, default=1, help="OMP threads of the worker (default 1)")
    add("--out", type=Path, metavar="PATH", help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)
    if args.media_deadline < args.duration + DEADLINE_MARGIN_SECONDS:
        parser.error(f"--media-deadline must be at least --duration + {DEADLINE_MARGIN_SECONDS:g} s")
    return args


def plan_of(args: argparse.Namespace) -> SlowMediaPlan:
    return SlowMediaPlan(
        placement=Placement(args.model, args.device, args.dtype, args.threads),
        workload=Workload(args.prompt, args.max_tokens, temperature=0.0),
        clients=args.clients,
        duration_s=args.duration,
        media_requests=args.media_requests,
        max_batch=args.max_batch,
        media_deadline_s=args.media_deadline,
    )


def run_slow_media(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = plan_of(args)
    deadline = f"{plan.media_deadline_s:g}"
    with our_stack(
        plan.placement,
        max_batch=plan.max_batch,
        ALLOWED_MEDIA_HOSTS="127.0.0.1",
        MEDIA_FETCH_DEADLINE_SECONDS=deadline,
        MEDIA_FETCH_TIMEOUT_SECONDS=deadline,
    ) as stack:
        result = asyncio.run(measure(stack.target(), plan))
    print(render(result), end="")
    print(f"process logs: {LOG_DIR}", file=sys.stderr)
    if args.out:
        write_json(result, args.out)
        print(f"figures written to {args.out}", file=sys.stderr)
    failed = result.text_only.failed + result.beside_media.failed
    return 0 if not failed and not result.pending.problems() else 1


async def measure(target: Target, plan: SlowMediaPlan) -> SlowMediaResult:
    connections = plan.clients + plan.media_requests + 8
    async with SilentListener() as listener, http_client(connections, READ_TIMEOUT_SECONDS) as client:
        prefix_chunks = await _warm_up(client, target, plan.workload)
        log.info("phase A: %d text clients for %g s", plan.clients, plan.duration_s)
        text_only = await _text_load(client, target, plan, prefix_chunks)
        media = HeldMedia(client, target, plan.workload, plan.media_requests)
        try:
            media.send(lambda session_id: listener.url(f"{session_id}.png"))
            await _wait_for_media_slots(listener, media, min(plan.media_requests, plan.max_batch))
            connections_at_start = listener.accepted
            log.info(
                "phase B: the same load beside %d pending media requests (%d fetches connected)",
                plan.media_requests,
                connections_at_start,
            )
            beside_media = await _text_load(client, target, plan, prefix_chunks)
            pending = PendingCheck(
                sent=plan.media_requests,
                media_slots=plan.max_batch,
                connections_at_start=connections_at_start,
                connections_accepted=listener.accepted,
                connections_open=listener.open,
                statuses=await media.statuses(),
                streams_open=media.open,
            )
        finally:
            # Closing the connections fails the fetches at once, so the worker stops promptly.
            listener.release()
            await media.let_go()
    settings = {**plan.settings(), "prompt_tokens": text_only.prompt_tokens, "prefix_chunks": prefix_chunks}
    return SlowMediaResult(settings, text_only, beside_media, pending)


async def _warm_up(client: httpx.AsyncClient, target: Target, workload: Workload) -> int:
    for _ in range(WARMUP_REQUESTS):
        warmup = await stream_once(client, target, workload, workload.max_tokens)
        if not warmup.ok:
            raise RuntimeError(f"warm-up request failed: {warmup.failure}")
    return await count_prefix_chunks(client, target, workload)


async def _text_load(
    client: httpx.AsyncClient, target: Target, plan: SlowMediaPlan, prefix_chunks: int
) -> LevelResult:
    level = await run_for(client, target, plan.workload, plan.clients, plan.duration_s, prefix_chunks)
    log.info(
        "%d ok, %d failed, %.1f tok/s, TTFT p50 %s ms",
        level.ok,
        level.failed,
        level.tokens_per_s,
        f"{level.ttft_ms.p50:.1f}" if level.ttft_ms.p50 is not None else "-",
    )
    return level


async def _wait_for_media_slots(listener: SilentListener, media: HeldMedia, in_slots: int) -> None:
    """Until the media job slots run the requests and their fetches have connected."""
    statuses: dict[str, int] = {}
    try:
        async with asyncio.timeout(MEDIA_START_SECONDS):
            while True:
                if failure := media.first_failure():
                    raise RuntimeError(f"a request with media ended before phase B: {failure}")
                statuses = await media.statuses()
                if statuses.get("running", 0) >= in_slots and listener.accepted:
                    break
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError as error:
        raise TimeoutError(
            f"after {MEDIA_START_SECONDS:g} s, {listener.accepted} fetches connected, sessions: {statuses}"
        ) from error
    await asyncio.sleep(SETTLE_SECONDS)
    log.info("%d media requests running, %d fetches connected", in_slots, listener.accepted)
