"""``python -m bench soak``: streaming load through injected faults, then every session checked.

Clients stream completions and resume them whenever a connection breaks, while processes
are killed and Redis is restarted or paused. Once the load stops and the sessions are given
time to end, every session is replayed in full and compared with what its client assembled
(bench/soak_check.py). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak_check import Replay, Tally, Verdict, judge
from bench.soak_client import Client, FinalReplay, Request, SessionLog, final_replay
from bench.soak_faults import FAULTS, FaultRecord, Scheduled, schedule
from bench.soak_report import ProblemSession, SoakResult, render, write_json
from bench.soak_stack import SoakStack, StackShape, soak_stack
from bench.sse import http_client
from bench.workload import DEFAULT_PROMPT
from tests.processes import LOG_DIR, TINY_MODEL_DIR

log = logging.getLogger(__name__)

SUPERVISE_EVERY_SECONDS = 1.0
REPLAY_CONCURRENCY = 8


@dataclass(frozen=True)
class SoakPlan:
    duration_s: float
    clients: int
    drain_s: float
    fault_gap_s: tuple[float, float]
    faults: list[str]
    seed: int
    read_timeout_s: float
    replay_idle_s: float
    request: Request
    shape: StackShape


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _gap(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    gap = (float(low), float(high or low))
    if not 0 < gap[0] <= gap[1]:
        raise argparse.ArgumentTypeError(f"not a gap in seconds (like 10-15): {text}")
    return gap


def _faults(text: str) -> list[str]:
    names = [name for name in text.split(",") if name and name != "none"]
    if unknown := set(names) - set(FAULTS):
        raise argparse.ArgumentTypeError(
            f"unknown fault(s) {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}"
        )
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    add("--clients", type=_positive, default=16, help="concurrent streaming clients (default 16)")
    add("--gateways", type=_positive, default=2, help="gateway processes (default 2)")
    add("--workers", type=_positive, default=2, help="worker processes (default 2)")
    add("--drain", type=float, default=90.0, help="seconds sessions get to end after the load (default 90)")
    add(
        "--fault-every",
        type=_gap,
        default=(10.0, 15.0),
        metavar="LOW-HIGH",
        help="gap between faults, s (default 10-15)",
    )
    add(
        "--faults",
        type=_faults,
        default=list(FAULTS),
        help=f"faults in rotation, or none (default {','.join(FAULTS)})",
    )
    add("--min-tokens", type=_positive, default=64, help="least max_tokens of a request (default 64)")
    add("--max-tokens", type=_positive, default=200, help="most max_tokens of a request (default 200)")
    add(
        "--temperature", type=float, default=0.0, help="0 is greedy (default); above, each request has a seed"
    )
    add("--prompt", default=DEFAULT_PROMPT, help="the user message of every request")
    add("--model", type=Path, default=TINY_MODEL_DIR, help="checkpoint directory (default: the tiny one)")
    add("--lease", type=float, default=2.0, help="WORKER_LEASE_SECONDS of the stack (default 2)")
    add(
        "--read-timeout", type=float, default=30.0, help="s without data before a client resumes (default 30)"
    )
    add("--seed", type=int, default=0, help="seeds request lengths, sampling and fault timing (default 0)")
    add("--out", type=Path, metavar="PATH", help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.min_tokens > args.max_tokens:
        parser.error("--min-tokens is above --max-tokens")
    return args


def plan_of(args: argparse.Namespace) -> SoakPlan:
    return SoakPlan(
        duration_s=args.duration,
        clients=args.clients,
        drain_s=args.drain,
        fault_gap_s=args.fault_every,
        faults=args.faults,
        seed=args.seed,
        read_timeout_s=args.read_timeout,
        replay_idle_s=5.0,
        request=Request(args.prompt, args.min_tokens, args.max_tokens, args.temperature),
        shape=StackShape(args.model, args.gateways, args.workers, args.clients, args.lease),
    )


async def _user(
    client: Client, number: int, sessions: list[SessionLog], load_ends: float, give_up: float, seed: int
) -> None:
    """One client: a session after another until the load ends; each may run until give_up."""
    loop = asyncio.get_running_loop()
    rng = random.Random(f"{seed}-{number}")
    count = 0
    while loop.time() < load_ends:
        session = SessionLog(f"soak-{number}-{count}")
        sessions.append(session)
        # Past give_up a session stays as it is: not done, hence hung.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(give_up):
                await client.run_session(session, rng, gateway=number + count)
        count += 1


async def _inject(stack: SoakStack, plan: list[Scheduled], start: float, records: list[FaultRecord]) -> None:
    loop = asyncio.get_running_loop()
    for item in plan:
        await asyncio.sleep(max(0.0, start + item.at_s - loop.time()))
        began = loop.time()
        try:
            detail = await asyncio.to_thread(_apply, stack, item)
        except Exception as error:
            detail = f"failed: {type(error).__name__}: {error}"
        log.info("fault %s at %.1f s: %s", item.name, began - start, detail)
        records.append(FaultRecord(round(began - start, 1), item.name, detail, round(loop.time() - began, 1)))


def _apply(stack: SoakStack, item: Scheduled) -> str:
    with stack.lock:
        return FAULTS[item.name](stack, item.turn)


async def _supervise(stack: SoakStack) -> None:
    while True:
        try:
            await asyncio.to_thread(stack.supervise)
        except Exception as error:
            # A process that cannot start now (Redis paused, say) is tried again next round.
            log.warning("supervisor: %s: %s", type(error).__name__, error)
        await asyncio.sleep(SUPERVISE_EVERY_SECONDS)


async def _replay_all(client: Client, sessions: list[SessionLog], idle_s: float) -> list[FinalReplay]:
    gate = asyncio.Semaphore(REPLAY_CONCURRENCY)

    async def one(session: SessionLog) -> FinalReplay:
        async with gate:
            return await final_replay(client.http, client.gateways, session.session_id, idle_s)

    return list(await asyncio.gather(*(one(session) for session in sessions)))


def _verdict(session: SessionLog, final: FinalReplay) -> Verdict:
    verdict = judge(session.events, session.done, final.replay or Replay((), complete=False))
    if final.found and final.replay is None:
        return dataclasses.replace(verdict, mismatch="no gateway could replay the session")
    return verdict


def _check(
    rejected: list[SessionLog], checked: list[tuple[SessionLog, FinalReplay]]
) -> tuple[Tally, list[ProblemSession]]:
    tally = Tally()
    for session in rejected:
        tally.add_rejection(session.rejection or "")
    problems: list[ProblemSession] = []
    for session, final in checked:
        if not session.accepted and not final.found:
            # The POST broke and no gateway knows the session: it was never created.
            tally.add_rejection("dropped_before_accepted")
            continue
        lost = session.lost or not final.found
        verdict = _verdict(session, final)
        tally.add_verdict(verdict, lost)
        if lost or not verdict.clean:
            problems.append(ProblemSession.of(session, verdict, lost, final.status))
    return tally, problems


async def drive(plan: SoakPlan, stack: SoakStack) -> SoakResult:
    """Load with faults, let the sessions end, replay and check every one."""
    loop = asyncio.get_running_loop()
    faults = schedule(plan.faults, plan.duration_s, plan.fault_gap_s, random.Random(plan.seed))
    sessions: list[SessionLog] = []
    records: list[FaultRecord] = []
    async with http_client(2 * plan.clients + 8, plan.read_timeout_s) as http:
        client = Client(http, stack.urls, plan.request)
        start = stack.epoch = loop.time()
        load_ends, give_up = start + plan.duration_s, start + plan.duration_s + plan.drain_s
        log.info("load: %d clients for %g s, %d faults planned", plan.clients, plan.duration_s, len(faults))
        background = [
            asyncio.create_task(_supervise(stack)),
            injector := asyncio.create_task(_inject(stack, faults, start, records)),
        ]
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(plan.clients):
                    group.create_task(_user(client, number, sessions, load_ends, give_up, plan.seed))
            await injector
            ended = loop.time() - start
            log.info("load and drain over after %.1f s; replaying %d sessions", ended, len(sessions))
            to_check = [session for session in sessions if session.rejection is None]
            # The supervisor keeps running: a replay needs the gateways up.
            replays = await _replay_all(client, to_check, plan.replay_idle_s)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    rejected = [session for session in sessions if session.rejection is not None]
    tally, problems = _check(rejected, list(zip(to_check, replays, strict=True)))
    return SoakResult(
        settings=_settings(plan),
        tally=tally,
        faults=records,
        exits=list(stack.exits),
        drops=sum((session.drops for session in sessions), Counter()),
        connections=sum(session.connections for session in sessions),
        wall_s=round(ended, 1),
        problems=problems,
    )


def _settings(plan: SoakPlan) -> dict[str, Any]:
    return {
        "duration_s": plan.duration_s,
        "drain_s": plan.drain_s,
        "clients": plan.clients,
        "gateways": plan.shape.gateways,
        "workers": plan.shape.workers,
        "worker_lease_s": plan.shape.lease_seconds,
        "fault_gap_s": list(plan.fault_gap_s),
        "faults": plan.faults,
        "max_tokens": [plan.request.min_tokens, plan.request.max_tokens],
        "temperature": plan.request.temperature,
        "seed": plan.seed,
        "model": str(plan.shape.model_dir),
    }


def run_soak(argv: list[str]) -> int:
    """0 when every session came through intact, 1 when the soak found anything."""
    args = parse_args(argv)
    plan = plan_of(args)
    started = time.monotonic()
    with soak_stack(plan.shape) as stack:
        log.info("stack up after %.1f s", time.monotonic() - started)
        result = asyncio.run(drive(plan, stack))
    print(render(result), end="")
    print(f"process logs: {LOG_DIR}", file=sys.stderr)
    if args.out:
        write_json(result, args.out)
        print(f"results written to {args.out}", file=sys.stderr)
    return 0 if result.tally.clean else 1
