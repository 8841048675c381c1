"""``python -m bench media-itl``: running text streams' pace while image and video requests arrive.

One stack (redis-server, a gateway, a worker). Phase A: 15 clients stream 256-token text
answers one after another for ``--seconds``. Phase B: the same load while a request with
a 16-frame video (``--frames``), then one with an image, arrives every ``--every``
seconds. The inter-token latency of the text streams is reported per phase (p50, p99):
a prompt with images or video is prefilled in pieces (WORKER_PREFILL_CHUNK_TOKENS) with a
decoding step between them, so a running stream waits for one piece at most; the target
is p99 <= 3x p50 in phase B. With ``--long-text N`` the arrivals are text prompts of N
tokens instead (prefilled in pieces too, when longer than a piece).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from bench.load import Stream, Target, closed_loop, stream_once
from bench.long_context import prompt_of
from bench.sse import http_client
from bench.stack import add_placement_args, our_stack, ours_full_length_body, placement_of
from bench.workload import DEFAULT_PROMPT, Workload
from tests.media import data_uri, image_bytes, video_bytes
from tests.processes import LOG_DIR


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench media-itl", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--clients", type=int, default=15, help="text streams running at once (default 15)")
    add("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    add("--every", type=float, default=2.0, help="seconds between media requests in phase B (default 2)")
    add("--frames", type=int, default=16, help="frames of the video (default 16)")
    add("--max-tokens", type=int, default=256, help="output tokens of each text stream (default 256)")
    add("--long-text", type=int, default=0, help="arrivals are text prompts of this many tokens instead")
    add_placement_args(parser)
    return parser.parse_args(argv)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def intervals_ms(streams: list[Stream]) -> list[float]:
    return [
        (later - earlier) * 1000
        for stream in streams
        if stream.ok
        for earlier, later in itertools.pairwise(stream.token_times)
    ]


def arrival_contents(frames: int, long_text: int) -> Iterator[list[dict[str, Any]]]:
    """The arrivals' message contents: a video and an image by turns, or a long text."""
    if long_text:
        return itertools.repeat([{"type": "text", "text": prompt_of(long_text)}])
    video = data_uri(video_bytes(frames=frames, size=(320, 240)), "video/mp4")
    image = data_uri(image_bytes(size=(640, 480)), "image/png")
    parts = itertools.cycle(
        [
            {"type": "video_url", "video_url": {"url": video}},
            {"type": "image_url", "image_url": {"url": image}},
        ]
    )
    return ([part, {"type": "text", "text": "Describe it."}] for part in parts)


async def media_arrivals(
    client: httpx.AsyncClient,
    url: str,
    seconds: float,
    every: float,
    contents: Iterator[list[dict[str, Any]]],
) -> list[str]:
    """Send the arrivals, one every ``every`` seconds, until ``seconds`` have passed."""
    deadline = time.perf_counter() + seconds
    outcomes: list[str] = []
    pending = []
    while time.perf_counter() < deadline:
        content = next(contents)
        request = {"messages": [{"role": "user", "content": content}], "max_tokens": 8}
        pending.append(asyncio.create_task(client.post(f"{url}/v1/chat/completions", json=request)))
        await asyncio.sleep(every)
    for task in pending:
        response = await task
        outcomes.append("ok" if response.status_code == 200 else f"HTTP {response.status_code}")
    return outcomes


async def measure(url: str, args: argparse.Namespace) -> tuple[list[Stream], list[Stream], list[str]]:
    workload = Workload(DEFAULT_PROMPT, args.max_tokens, temperature=0.0)
    target = Target("text", url, "bench", ours_full_length_body)
    async with http_client(args.clients + 32, 600.0) as client:
        await stream_once(client, target, workload, 8)  # warm-up
        alone = await closed_loop(client, target, workload, args.clients, args.seconds)
        beside, media = await asyncio.gather(
            closed_loop(client, target, workload, args.clients, args.seconds),
            media_arrivals(
                client, url, args.seconds, args.every, arrival_contents(args.frames, args.long_text)
            ),
        )
    return alone, beside, media


def run_media_itl(argv: list[str]) -> int:
    args = parse_args(argv)
    with our_stack(placement_of(args), max_batch=args.clients + 4) as stack:
        alone, beside, media = asyncio.run(measure(stack.gateway.url, args))
    settings = (
        f"{args.model.name}, {args.device}, {args.dtype}, {args.threads} thread(s), {os.cpu_count()} CPUs"
    )
    print(
        f"# Text streams' pace beside media requests: {args.clients} clients, "
        f"{args.max_tokens}-token greedy streams, {args.seconds:g} s a phase; {settings}\n"
    )
    print("| phase | streams ok | ITL p50 ms | ITL p99 ms | ITL max ms | p99 / p50 |")
    print("| --- | --- | --- | --- | --- | --- |")
    arrivals = (
        f"a {args.long_text}-token text" if args.long_text else f"a {args.frames}-frame video or an image"
    )
    for name, streams in (("A: text only", alone), (f"B: + {arrivals} every {args.every:g} s", beside)):
        itls = intervals_ms(streams)
        p50, p99, top = percentile(itls, 0.5), percentile(itls, 0.99), max(itls, default=float("nan"))
        ok = sum(s.ok for s in streams)
        print(f"| {name} | {ok} | {p50:.1f} | {p99:.1f} | {top:.1f} | {p99 / p50:.1f} |")
    print(f"\narriving requests in phase B: {len(media)}, ok {media.count('ok')}")
    print(f"process logs: {LOG_DIR}", file=sys.stderr)
    return 0
