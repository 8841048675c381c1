"""``python -m bench long-context``: decoding speed with a 4k-token prompt beside a 128-token one.

One stack (redis-server, a gateway, a worker); one stream at a time (c1), greedy, with the
end-of-sequence tokens banned so that every stream decodes ``--max-tokens`` tokens. The
decode rate is 1 / inter-token latency p50 (the prefill, which grows with the prompt, is
left out); tokens/s over the whole stream are shown too. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict

from bench.load import Target, measure_server
from bench.results import LevelResult
from bench.stack import add_placement_args, our_stack, ours_full_length_body, placement_of
from bench.workload import Workload
from tests.processes import LOG_DIR

# Each word is one token of Qwen's tokenizer (with its leading space).
FILLER_WORD = " the"


def prompt_of(tokens: int) -> str:
    return "Summarise this:" + FILLER_WORD * tokens


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench long-context", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--short", type=int, default=128, help="prompt tokens of the short prompt (default 128)")
    add("--long", type=int, default=4096, help="prompt tokens of the long prompt (default 4096)")
    add("--max-tokens", type=int, default=256, help="output tokens per request (default 256)")
    add("--requests", type=int, default=4, help="requests per prompt (default 4)")
    add_placement_args(parser)
    return parser.parse_args(argv)


def decode_rate(level: LevelResult) -> float:
    p50 = level.itl_ms.p50
    return 1000.0 / p50 if p50 else float("nan")


def run_long_context(argv: list[str]) -> int:
    args = parse_args(argv)
    placement = placement_of(args)
    results: dict[str, LevelResult] = {}
    with our_stack(placement, max_batch=4) as stack:
        for name, tokens in (("short", args.short), ("long", args.long)):
            workload = Workload(prompt_of(tokens), args.max_tokens, temperature=0.0)
            target = Target(name, stack.gateway.url, "bench", ours_full_length_body)
            server = asyncio.run(measure_server(target, workload, [1], args.requests))
            results[name] = server.levels[0]
    short, long = results["short"], results["long"]
    ratio = decode_rate(long) / decode_rate(short)
    settings = (
        f"{args.model.name}, {args.device}, {args.dtype}, {args.threads} thread(s), {os.cpu_count()} CPUs"
    )
    print(f"# Long-context decode: c1, greedy, {args.max_tokens} output tokens; {settings}\n")
    print("| prompt | prompt tokens (server) | TTFT p50 ms | ITL p50 ms | decode tok/s | stream tok/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, level in results.items():
        print(
            f"| {name} | {level.prompt_tokens} | {level.ttft_ms.p50 or 0:.1f} | "
            f"{level.itl_ms.p50 or 0:.2f} | {decode_rate(level):.1f} | {level.tokens_per_s:.1f} |"
        )
    print(f"\nlong / short decode rate: {ratio:.2f} (target >= 0.7)")
    print(f"process logs: {LOG_DIR}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({name: asdict(level) for name, level in results.items()}, indent=2))
    return 0
