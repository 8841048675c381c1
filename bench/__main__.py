"""Measure the service end to end, beside generate() and transformers serve (bench/README.md).

``python -m bench soak`` instead runs the fault-injection soak (bench/soak.py);
``python -m bench slow-media`` text load beside media that never arrive (bench/slow_media.py);
``python -m bench grammar`` json_schema-constrained streams beside free ones (bench/grammar.py);
``python -m bench long-context`` decoding after a 4k-token prompt (bench/long_context.py);
``python -m bench media-itl`` text streams' pace while media requests arrive (bench/media_itl.py);
``python -m bench real-size`` the real model's size on a GPU, beside generate() and the roofline
(bench/real_size.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from bench.grammar import run_grammar
from bench.long_context import run_long_context
from bench.media_itl import run_media_itl
from bench.real_size import run_real_size
from bench.report import render, write_json
from bench.slow_media import run_slow_media
from bench.soak import run_soak
from bench.stack import Placement
from bench.suite import PARTS, Plan, RelayPlan, run
from bench.workload import DEFAULT_PROMPT, LENGTH_FORCINGS, Workload
from tests.processes import LOG_DIR, TINY_MODEL_DIR

# Values the run uses when not given, for the full run and for --quick.
FULL: dict[str, object] = {
    "levels": [1, 4, 16, 64],
    "requests": 64,
    "baseline_runs": 10,
    "replay_runs": 20,
    "relay_seconds": 10.0,
    "skip": "",
}
# transformers serve --continuous-batching serves Qwen3-VL sequentially, like its default mode.
QUICK = {**FULL, "levels": [1, 4], "requests": 8, "baseline_runs": 3, "replay_runs": 5, "relay_seconds": 3.0}
QUICK["skip"] = "peer-cb"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def level_list(text: str) -> list[int]:
    return [positive(level) for level in text.split(",")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        epilog="python -m bench soak --help: the fault-injection soak; "
        "python -m bench slow-media --help: text load beside media that never arrive",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="levels 1 and 4, fewer requests: about a minute")
    add("--levels", type=level_list, help="comma-separated concurrency levels (default 1,4,16,64)")
    add("--requests", type=positive, help=f"requests per level, at least c (default {FULL['requests']})")
    add("--max-tokens", type=positive, default=64, help="output tokens per request (default 64)")
    add("--prompt", default=DEFAULT_PROMPT, help="the user message of every request")
    add("--temperature", type=float, default=1.0, help="(default 1.0)")
    add("--top-p", type=float, default=1.0, help="(default 1.0)")
    add("--top-k", type=int, default=0, help="0 disables top-k (default)")
    add(
        "--length-forcing",
        choices=LENGTH_FORCINGS,
        default="eos-off",
        help="how the baseline and transformers serve are held to --max-tokens (default eos-off)",
    )
    add("--model", type=Path, default=TINY_MODEL_DIR, help="checkpoint directory (default: the tiny one)")
    add("--device", default="cpu", help="device of every model process (default cpu)")
    add("--dtype", default="float32", help="weight dtype (default float32)")
    add("--threads", type=positive, default=1, help="OMP threads per model process (default 1)")
    add(
        "--baseline-runs",
        type=positive,
        help=f"generate() runs of the baseline (default {FULL['baseline_runs']})",
    )
    add("--replay-events", type=positive, default=2000, help="events of the replayed session (default 2000)")
    add("--replay-runs", type=positive, help=f"sequential replays (default {FULL['replay_runs']})")
    add("--replay-clients", type=positive, default=50, help="clients replaying at once (default 50)")
    add("--relay-clients", type=positive, default=500, help="clients following live sessions (default 500)")
    add("--relay-sessions", type=positive, default=50, help="live sessions they follow (default 50)")
    add("--relay-rate", type=float, default=10.0, help="events/s written into each session (default 10)")
    add(
        "--relay-held",
        type=int,
        default=0,
        help="idle streams held open during the live relay, on sessions that never get an event (default 0)",
    )
    add("--relay-seconds", type=float, help=f"how long the writer writes (default {FULL['relay_seconds']:g})")
    add(
        "--skip",
        help=f"comma-separated parts to leave out: {', '.join(PARTS)} (default: none; with --quick: peer-cb)",
    )
    add(
        "--worker-compile",
        default="",
        metavar="MODE",
        help="WORKER_COMPILE of our worker: a torch.compile mode such as default (default: off)",
    )
    add("--json", type=Path, metavar="PATH", help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    skip = frozenset(part for part in args.skip.split(",") if part)
    if args.replay_events < 3:
        raise SystemExit("--replay-events: a finished session has at least 3 events")
    if unknown := skip - set(PARTS):
        raise SystemExit(f"--skip: unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    return Plan(
        placement=Placement(args.model, args.device, args.dtype, args.threads),
        workload=Workload(
            args.prompt, args.max_tokens, args.temperature, args.top_p, args.top_k, args.length_forcing
        ),
        levels=args.levels,
        requests=args.requests,
        baseline_runs=args.baseline_runs,
        relay=RelayPlan(
            replay_events=args.replay_events,
            replay_runs=args.replay_runs,
            replay_clients=args.replay_clients,
            clients=args.relay_clients,
            sessions=args.relay_sessions,
            rate=args.relay_rate,
            seconds=args.relay_seconds,
            held=args.relay_held,
        ),
        skip=skip,
        worker_compile=args.worker_compile,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into what Ctrl-C raises, so every started process gets stopped.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        if argv[:1] == ["soak"]:
            return run_soak(argv[1:])
        if argv[:1] == ["slow-media"]:
            return run_slow_media(argv[1:])
        if argv[:1] == ["grammar"]:
            return run_grammar(argv[1:])
        if argv[:1] == ["long-context"]:
            return run_long_context(argv[1:])
        if argv[:1] == ["media-itl"]:
            return run_media_itl(argv[1:])
        if argv[:1] == ["real-size"]:
            return run_real_size(argv[1:])
        return benchmark(argv)
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        return 130


def benchmark(argv: list[str]) -> int:
    args = parse_args(argv)
    results = run(plan_of(args))
    print(render(results), end="")
    print(f"process logs: {LOG_DIR}", file=sys.stderr)
    if args.json:
        write_json(results, args.json)
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
