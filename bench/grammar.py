"""``python -m bench grammar``: a json_schema-constrained stream beside an unconstrained one.

One stack (redis-server, a gateway, a worker). The same streaming load is run twice per
concurrency level: once free, once with ``response_format`` json_schema (an object with
one string field, which a random model fills until the token budget ends), both with
``thinking_token_budget: 0`` so that every token is an answer token and the constrained
run is constrained from its first token. Tokens/s are printed side by side; the grammar
mask is computed on the CPU at every step for every constrained row. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import asdict
from typing import Any

from bench.load import Target, measure_server
from bench.results import ServerResult
from bench.stack import add_placement_args, our_stack, ours_extra_body, placement_of
from bench.workload import DEFAULT_PROMPT, Workload
from tests.processes import LOG_DIR

log = logging.getLogger(__name__)

STORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"story": {"type": "string"}},
    "required": ["story"],
    "additionalProperties": False,
}


def free_body(workload: Workload, max_tokens: int) -> dict[str, Any]:
    return {**ours_extra_body(workload, max_tokens), "thinking_token_budget": 0}


def constrained_body(workload: Workload, max_tokens: int) -> dict[str, Any]:
    schema = {"name": "story", "schema": STORY_SCHEMA, "strict": True}
    return {
        **free_body(workload, max_tokens),
        "response_format": {"type": "json_schema", "json_schema": schema},
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench grammar", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--levels", default="1,16", help="comma-separated concurrency levels (default 1,16)")
    add("--requests", type=int, default=32, help="requests per level, at least c (default 32)")
    add("--max-tokens", type=int, default=64, help="output tokens per request (default 64)")
    add_placement_args(parser)
    return parser.parse_args(argv)


def render(free: ServerResult, constrained: ServerResult, settings: dict[str, Any]) -> str:
    lines = [
        "# json_schema-constrained vs free streams",
        "",
        ", ".join(f"{key} {value}" for key, value in settings.items()),
        "",
        "| c | free tok/s | constrained tok/s | ratio | free TTFT p50 ms | constrained TTFT p50 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level in free.levels:
        other = constrained.level(level.concurrency)
        if other is None:
            continue
        ratio = other.tokens_per_s / level.tokens_per_s if level.tokens_per_s else float("nan")
        lines.append(
            f"| {level.concurrency} | {level.tokens_per_s:.1f} | {other.tokens_per_s:.1f} | {ratio:.2f} | "
            f"{level.ttft_ms.p50 or 0:.1f} | {other.ttft_ms.p50 or 0:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run_grammar(argv: list[str]) -> int:
    args = parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]
    placement = placement_of(args)
    workload = Workload(DEFAULT_PROMPT, args.max_tokens, temperature=1.0)
    settings = {
        "model": args.model.name,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "max_tokens": args.max_tokens,
        "requests": args.requests,
    }
    with our_stack(placement, max_batch=max(levels)) as stack:
        url = stack.gateway.url
        free = asyncio.run(
            measure_server(Target("free", url, "bench", free_body), workload, levels, args.requests)
        )
        constrained = asyncio.run(
            measure_server(
                Target("json_schema", url, "bench", constrained_body), workload, levels, args.requests
            )
        )
    print(render(free, constrained, settings), end="")
    print(f"process logs: {LOG_DIR}", file=sys.stderr)
    if args.json:
        figures = {
            "settings": settings,
            "free": [asdict(level) for level in free.levels],
            "constrained": [asdict(level) for level in constrained.levels],
        }
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
