"""Closed-loop streaming load against an OpenAI-compatible ``/v1/chat/completions``.

At concurrency c, c simulated users each send one streaming request after another until
the level's requests are used up. Time to first token is the time to the first chunk with
non-empty ``content`` or ``reasoning_content``; inter-token latency the time between two
such consecutive chunks. Output tokens are the server's ``usage.completion_tokens`` where
it reports them, else the number of those chunks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.cpu_use import CoreWatch
from bench.results import LevelResult, ServerResult
from bench.sse import http_client, sse_data
from bench.stats import Percentiles
from bench.workload import Workload

log = logging.getLogger(__name__)

WARMUP_REQUESTS = 2
PREFIX_PROBES = 3
READ_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Target:
    """A server under load and how to phrase the workload for it."""

    name: str
    base_url: str
    model: str
    # Fields beyond the common ones for a given output length: how this server is asked
    # for the workload's sampling, and for an exact length where it can be.
    extra_body: Callable[[Workload, int], dict[str, Any]]

    def body(self, workload: Workload, max_tokens: int) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": workload.messages,
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": workload.temperature,
            "top_p": workload.top_p,
            **self.extra_body(workload, max_tokens),
        }


@dataclass
class Stream:
    """What one streaming request saw, with perf_counter timestamps."""

    start: float
    end: float = 0.0
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def failure(self) -> str | None:
        if self.error is None and self.finish_reason is None:
            return "the stream ended without a finish_reason"
        return self.error

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else len(self.token_times)

    def read_chunk(self, payload: dict[str, Any], now: float) -> None:
        if "error" in payload:
            self.error = str(payload["error"].get("message", payload["error"]))
        usage = payload.get("usage")
        if usage:
            self.completion_tokens = usage.get("completion_tokens")
            self.prompt_tokens = usage.get("prompt_tokens")
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning_content"):
                self.token_times.append(now)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]


async def stream_once(
    client: httpx.AsyncClient, target: Target, workload: Workload, max_tokens: int
) -> Stream:
    stream = Stream(start=time.perf_counter())
    url = f"{target.base_url}/v1/chat/completions"
    try:
        async with client.stream("POST", url, json=target.body(workload, max_tokens)) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                stream.error = f"HTTP {response.status_code}: {text[:300]}"
            else:
                async for data in sse_data(response):
                    if data == "[DONE]":
                        break
                    stream.read_chunk(json.loads(data), time.perf_counter())
    except (httpx.HTTPError, json.JSONDecodeError) as error:
        stream.error = f"{type(error).__name__}: {error}"
    stream.end = time.perf_counter()
    return stream


def summarise(concurrency: int, streams: list[Stream], prefix_chunks: int) -> LevelResult:
    ok = [stream for stream in streams if stream.ok]
    ttfts: list[float] = []
    itls: list[float] = []
    for stream in ok:
        times = stream.token_times[prefix_chunks:]
        if times:
            ttfts.append(times[0] - stream.start)
            itls.extend(later - earlier for earlier, later in itertools.pairwise(times))
    wall = max(s.end for s in streams) - min(s.start for s in streams)
    tokens = sum(stream.tokens for stream in ok)
    errors = [stream.failure for stream in streams if stream.failure]
    return LevelResult(
        concurrency=concurrency,
        requests=len(streams),
        ok=len(ok),
        failed=len(streams) - len(ok),
        ttft_ms=Percentiles.of_seconds(ttfts),
        itl_ms=Percentiles.of_seconds(itls),
        output_tokens=tokens,
        wall_s=wall,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        prompt_tokens=next((s.prompt_tokens for s in ok if s.prompt_tokens is not None), None),
        first_error=errors[0] if errors else None,
    )


async def run_level(
    client: httpx.AsyncClient,
    target: Target,
    workload: Workload,
    concurrency: int,
    requests: int,
    prefix_chunks: int,
) -> LevelResult:
    pending = iter(range(requests))
    streams: list[Stream] = []

    async def user() -> None:
        for _ in pending:
            streams.append(await stream_once(client, target, workload, workload.max_tokens))

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(user())
    return summarise(concurrency, streams, prefix_chunks)


async def run_for(
    client: httpx.AsyncClient,
    target: Target,
    workload: Workload,
    concurrency: int,
    seconds: float,
    prefix_chunks: int,
) -> LevelResult:
    """Closed loop for a fixed time: each user starts requests until ``seconds`` have passed;
    the requests under way then are waited for and counted."""
    return summarise(
        concurrency, await closed_loop(client, target, workload, concurrency, seconds), prefix_chunks
    )


async def closed_loop(
    client: httpx.AsyncClient, target: Target, workload: Workload, concurrency: int, seconds: float
) -> list[Stream]:
    """``concurrency`` users each streaming one request after another until ``seconds`` have passed."""
    deadline = time.perf_counter() + seconds
    streams: list[Stream] = []

    async def user() -> None:
        while time.perf_counter() < deadline:
            streams.append(await stream_once(client, target, workload, workload.max_tokens))

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(user())
    return streams


async def count_prefix_chunks(client: httpx.AsyncClient, target: Target, workload: Workload) -> int:
    """Text chunks a server sends before its first generated token.

    `transformers serve` echoes the `<think>` opener the chat template put in the prompt as
    a reasoning chunk before generating anything; counting such chunks as tokens would
    flatter its time to first token. One-token requests reveal how many there are.
    """
    probes = [await stream_once(client, target, workload, 1) for _ in range(PREFIX_PROBES)]
    ok = [probe for probe in probes if probe.ok]
    if not ok:
        raise RuntimeError(f"{target.name}: probe requests failed: {probes[0].failure}")
    return max(0, *(len(probe.token_times) - probe.tokens for probe in ok))


async def measure_server(
    target: Target,
    workload: Workload,
    levels: list[int],
    requests: int,
    processes: dict[str, int] | None = None,
) -> ServerResult:
    """Warm up (one request at a time, then a burst), find the prefix chunks, then run every
    level (at least c requests each).

    ``processes`` (name: pid) are the server's processes whose use of the cores each level
    records, beside this client's own (bench.cpu_use)."""
    async with http_client(max(levels) + 8, READ_TIMEOUT_SECONDS) as client:
        for _ in range(WARMUP_REQUESTS):
            warmup = await stream_once(client, target, workload, workload.max_tokens)
            if not warmup.ok:
                raise RuntimeError(f"{target.name}: warm-up request failed: {warmup.failure}")
        # Then one burst at the highest level, uncounted: whatever a server prepares for
        # batches (a compiled model compiles for them) is ready before the first level.
        burst = await run_level(client, target, workload, max(levels), max(levels), 0)
        if burst.failed:
            raise RuntimeError(f"{target.name}: warm-up burst failed: {burst.first_error}")
        result = ServerResult(target.name, await count_prefix_chunks(client, target, workload))
        if result.prefix_chunks:
            result.notes.append(
                f"sends {result.prefix_chunks} text chunk(s) before its first generated token; "
                "left out of TTFT and ITL"
            )
        watch = CoreWatch(processes) if processes else None
        for concurrency in levels:
            if watch is not None:
                watch.start()
            level = await run_level(
                client, target, workload, concurrency, max(requests, concurrency), result.prefix_chunks
            )
            if watch is not None:
                level = dataclasses.replace(level, cores=watch.stop())
            log.info(
                "%s c=%d: %d ok, %d failed, %.1f tok/s, TTFT p50 %s ms",
                target.name,
                concurrency,
                level.ok,
                level.failed,
                level.tokens_per_s,
                f"{level.ttft_ms.p50:.1f}" if level.ttft_ms.p50 is not None else "-",
            )
            result.levels.append(level)
    return result
