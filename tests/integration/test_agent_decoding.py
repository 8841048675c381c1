"""Tools, structured output, logprobs, n and the thinking budget in the batching engine.

The tiny checkpoint has random weights: whatever it writes unconstrained is noise, so
every structure seen here comes from the grammar masks and the forced tokens.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import torch

from shared.jobs import Constraint, GenerationJob, ToolFunction
from shared.settings import Settings
from tests.integration.conftest import SequenceFactory, decode, make_job, open_session
from worker.engine import Engine
from worker.generation import build_sequences, continue_after
from worker.model import LoadedModel
from worker.sequence import Sequence, combined
from worker.verdict import prepare

WEATHER = ToolFunction(
    name="get_weather",
    parameters={
        "type": "object",
        "properties": {
            "city": {"enum": ["Paris", "Rome"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "days"],
        "additionalProperties": False,
    },
)
CLOCK = ToolFunction(
    name="get_time", parameters={"type": "object", "properties": {"utc": {"type": "boolean"}}}
)
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["small", "large"]}},
    "required": ["ok", "size"],
    "additionalProperties": False,
}


def with_fields(job: GenerationJob, **fields: Any) -> GenerationJob:
    return job.model_copy(update=fields)


def payloads(sequence_or_events: Sequence | list[str]) -> list[dict[str, Any]]:
    events = sequence_or_events if isinstance(sequence_or_events, list) else sequence_or_events.writer.events
    return [json.loads(event) for event in events]


def content_of(events: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["delta"].get("content") or "" for e in events for c in e["choices"] if c["index"] == index
    )


def reasoning_of(events: list[dict[str, Any]]) -> str:
    return "".join(c["delta"].get("reasoning_content") or "" for e in events for c in e["choices"])


def calls_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for event in events:
        for choice in event["choices"]:
            for part in choice["delta"].get("tool_calls") or ():
                call = calls.setdefault(part["index"], {"name": None, "arguments": ""})
                call["name"] = part["function"].get("name") or call["name"]
                call["arguments"] += part["function"].get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def test_a_forced_tool_call_is_well_formed_even_from_random_weights(
    sequence_for: SequenceFactory, engine: Engine
) -> None:
    for seed in range(3):
        job = make_job("Weather?", max_new_tokens=60, thinking_budget=0, temperature=1.0, seed=seed)
        constraint = Constraint(kind="tool_calls", functions=[WEATHER], parallel=False, param="tools")
        sequence = sequence_for(with_fields(job, tools=[WEATHER, CLOCK], constraint=constraint))
        outcome = decode(engine, sequence)
        events = payloads(sequence)
        assert outcome.finish_reason == "tool_calls"
        (call,) = calls_of(events)
        arguments = json.loads(call["arguments"])
        assert call["name"] == "get_weather"
        assert arguments["city"] in ("Paris", "Rome") and 1 <= arguments["days"] <= 7
        assert set(arguments) == {"city", "days"}
        assert content_of(events) == "" and reasoning_of(events) == ""


def test_a_json_schema_answer_follows_the_schema_after_free_reasoning(
    sequence_for: SequenceFactory, engine: Engine
) -> None:
    job = make_job("JSON?", max_new_tokens=80, thinking_budget=4, temperature=1.0, seed=11)
    sequence = sequence_for(
        with_fields(job, constraint=Constraint(kind="json_schema", json_schema=ANSWER_SCHEMA))
    )
    outcome = decode(engine, sequence)
    events = payloads(sequence)
    answer = json.loads(content_of(events))
    assert outcome.finish_reason == "stop"
    assert isinstance(answer["ok"], bool) and answer["size"] in ("small", "large")
    assert reasoning_of(events).endswith("based on the thinking directly now.\n")


def test_the_thinking_budget_ends_the_reasoning(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    no_eos = dict.fromkeys(loaded.eos_token_ids, -100.0)
    closing = len(loaded.thinking_end.closing)
    for budget, reasoning_tokens in ((0, 1), (6, 6 + closing + 1)):
        job = make_job(
            "Think", max_new_tokens=60, thinking_budget=budget, temperature=1.0, seed=5, logit_bias=no_eos
        )
        sequence = sequence_for(job)
        outcome = decode(engine, sequence)
        assert outcome.usage["completion_tokens_details"]["reasoning_tokens"] == reasoning_tokens
        assert content_of(payloads(sequence))  # the rest of the budget went to the answer
        if budget == 0:
            assert reasoning_of(payloads(sequence)) == ""


def test_a_constrained_row_decodes_the_same_beside_free_rows(
    sequence_for: SequenceFactory, engine: Engine
) -> None:
    def constrained() -> GenerationJob:
        job = make_job("JSON?", max_new_tokens=60, thinking_budget=3, temperature=1.0, seed=21)
        return with_fields(job, constraint=Constraint(kind="json_schema", json_schema=ANSWER_SCHEMA))

    alone = sequence_for(constrained())
    decode(engine, alone)
    together = [sequence_for(constrained())] + [
        sequence_for(make_job(text, max_new_tokens=60, temperature=1.0, seed=n))
        for n, text in enumerate(["A free row", "Another, longer, free row"])
    ]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda s: decode(engine, s), together))
    assert together[0].generated == alone.generated


def test_logprobs_are_those_of_the_model(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    job = make_job(
        "Hello", max_new_tokens=8, thinking_budget=0, temperature=0.0, logprobs=True, top_logprobs=3
    )
    sequence = sequence_for(job)
    decode(engine, sequence)
    entries = [
        entry
        for event in payloads(sequence)
        for choice in event["choices"]
        for entry in (choice["logprobs"] or {}).get("content") or ()
    ]
    forced = len(loaded.thinking_end.end)  # </think> and the blank line: no logprobs
    answer = [t for t in sequence.generated[forced:] if t not in loaded.eos_token_ids]
    assert len(entries) == len(answer) > 0
    prompt_ids = prepare(loaded, job).prompt_ids
    for position, (entry, token) in enumerate(list(zip(entries, answer, strict=True))[:3]):
        ids = torch.tensor([prompt_ids + sequence.generated[: forced + position]])
        with torch.inference_mode():
            logits = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
        expected = torch.log_softmax(logits.float(), dim=-1)
        assert abs(entry["logprob"] - float(expected[token])) < 1e-3
        assert bytes(entry["bytes"]) == loaded.token_texts.bytes_of(token)
        values = [top["logprob"] for top in entry["top_logprobs"]]
        assert len(values) == 3 and values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert entry["top_logprobs"][0]["logprob"] == entry["logprob"]  # greedy takes the best


def run_choices(engine: Engine, group: list[Sequence]) -> list[str]:
    """Decode a request's choices and end them as a job does: the events it writes."""
    running = [s for s in group if not s.finished]
    assert not running or engine.run_group(running)
    outcomes = [s.outcome() for s in group]
    combined(outcomes)
    for sequence, outcome in zip(group, outcomes, strict=True):
        sequence.writer.emit(sequence.chunks.finish(outcome.finish_reason))
    return group[0].writer.events


def choices_job(**fields: Any) -> GenerationJob:
    job = make_job("Pick", max_new_tokens=40, temperature=1.0, seed=99, thinking_budget=3)
    return with_fields(job, **{"n": 3, **fields})


def start_group(
    loaded: LoadedModel, connection: redis.Redis, settings: Settings, job: GenerationJob
) -> list[Sequence]:
    writer = open_session(connection, settings, job)
    group = build_sequences(loaded, job, writer)
    for sequence in group:
        writer.emit(sequence.chunks.role())
    return group


def test_n_choices_are_each_reproducible_and_share_the_prompt(
    loaded: LoadedModel, connection: redis.Redis, engine_settings: Settings, engine: Engine
) -> None:
    runs = []
    for _ in range(2):
        group = start_group(loaded, connection, engine_settings, choices_job())
        events = payloads(run_choices(engine, group))
        runs.append([s.generated for s in group])
        assert sorted({c["index"] for e in events for c in e["choices"]}) == [0, 1, 2]
        usage = combined([s.outcome() for s in group]).usage
        assert usage["prompt_tokens"] == group[0].prompt_tokens
        assert usage["completion_tokens"] == sum(len(s.generated) for s in group)
    assert runs[0] == runs[1]
    first, second, third = runs[0]
    assert first != second and second != third


def per_choice(events: list[str]) -> dict[int, list[Any]]:
    """Each choice's chunks in order, without the ids that name the session.

    After a takeover the choices' chunks may interleave differently (the rows are
    prefilled one by one), but each choice's own stream is the same.
    """
    result: dict[int, list[Any]] = {}
    for payload in payloads(events):
        for choice in payload.get("choices", ()):
            for call in choice["delta"].get("tool_calls") or ():
                call.pop("id", None)
            result.setdefault(choice["index"], []).append(choice)
    return result


def test_resumed_choices_with_tools_continue_exactly(
    loaded: LoadedModel, connection: redis.Redis, engine_settings: Settings, engine: Engine
) -> None:
    """A takeover replays the stored tokens: grammar state, forced tokens and parsers alike.

    (Exactly-once delivery across a takeover is the session store's: here the continuation
    is checked to produce each choice's stream as an uninterrupted run does.)
    """
    constraint = Constraint(kind="tool_calls", functions=[WEATHER, CLOCK], parallel=True, param="tools")
    job = choices_job(n=2, tools=[WEATHER, CLOCK], constraint=constraint)
    job.sampling.max_new_tokens = 100
    group = start_group(loaded, connection, engine_settings, job)
    reference = run_choices(engine, group)
    stored = tuple(group[0].writer.tokens)
    assert calls_of(payloads(reference))
    for cut in (1, 7, len(stored) // 2, len(stored) - 1):
        again = with_fields(job, session_id=f"{job.session_id}-{cut}")
        resumed = start_group(loaded, connection, engine_settings, again)
        continue_after(resumed, stored[:cut])
        assert per_choice(run_choices(engine, resumed)) == per_choice(reference)
