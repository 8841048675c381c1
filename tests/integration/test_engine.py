"""The batching engine against transformers' own generate(), on the tiny checkpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import torch

from shared.jobs import ChatMessage, GenerationJob, SamplingParams, TextPart
from shared.settings import Settings
from tests.processes import RedisServer
from worker.engine import Engine
from worker.generation import prepare
from worker.model import LoadedModel, load_model
from worker.sequence import Outcome, Sequence
from worker.session_writer import SessionScripts, SessionWriter

PROMPTS = ["Hi", "A much longer prompt, so that the rows of the batch have different lengths.", "Third"]


@pytest.fixture(scope="module")
def settings(redis_server: RedisServer, tiny_model: str) -> Settings:
    return Settings(
        model_repo_id=tiny_model, device_map="cpu", torch_dtype="float32", redis_url=redis_server.url(14)
    )


@pytest.fixture(scope="module")
def loaded(settings: Settings) -> LoadedModel:
    return load_model(settings)


@pytest.fixture
def connection(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def engine(loaded: LoadedModel, connection: redis.Redis) -> Iterator[Engine]:
    started = Engine(loaded, connection, max_batch=8)
    started.start()
    yield started
    started.stop()


def job(text: str, max_tokens: int, **sampling: object) -> GenerationJob:
    return GenerationJob(
        session_id=f"engine-{time.monotonic_ns()}",
        model="tiny",
        created=0,
        messages=[ChatMessage(role="user", content=[TextPart(text=text)])],
        sampling=SamplingParams(max_new_tokens=max_tokens, **sampling),
    )


def sequence_for(
    loaded: LoadedModel, connection: redis.Redis, settings: Settings, request: GenerationJob
) -> Sequence:
    writer = SessionWriter(connection, SessionScripts(connection), settings, request)
    return prepare(loaded, request, writer)


def reference_tokens(loaded: LoadedModel, request: GenerationJob) -> list[int]:
    """Greedy tokens from transformers' generate(), the ground truth for the engine."""
    sequence = sequence_for(loaded, redis.Redis(), Settings(), request)  # never touches Redis
    n = request.sampling.max_new_tokens
    with torch.inference_mode():
        output = loaded.model.generate(
            **sequence.inputs,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            top_p=None,
            top_k=None,
            temperature=None,
        )
    return [int(t) for t in output[0, sequence.prompt_tokens :].tolist()]


def test_batched_greedy_decoding_matches_generate(
    loaded: LoadedModel, connection: redis.Redis, settings: Settings, engine: Engine
) -> None:
    # Different lengths and different output budgets, so rows join and leave the batch.
    requests = [
        job(text, max_tokens, temperature=0.0) for text, max_tokens in zip(PROMPTS, (40, 25, 60), strict=True)
    ]
    # eos ends a row early in the engine but not in generate(min_new_tokens): compare up to it.
    sequences = [sequence_for(loaded, connection, settings, request) for request in requests]
    with ThreadPoolExecutor(len(sequences)) as pool:
        outcomes: list[Outcome] = list(pool.map(engine.run, sequences))
    for request, sequence, outcome in zip(requests, sequences, outcomes, strict=True):
        expected = reference_tokens(loaded, request)
        assert sequence.generated == expected[: len(sequence.generated)]
        assert outcome.usage["completion_tokens"] == len(sequence.generated)
        if outcome.finish_reason == "length":
            assert len(sequence.generated) == request.sampling.max_new_tokens


def test_rows_run_together_and_leave_independently(
    loaded: LoadedModel, connection: redis.Redis, settings: Settings, engine: Engine
) -> None:
    short = sequence_for(loaded, connection, settings, job("short", 5, temperature=0.0))
    long = sequence_for(loaded, connection, settings, job("long", 300, temperature=0.0))
    with ThreadPoolExecutor(2) as pool:
        long_future = pool.submit(engine.run, long)
        while not long.generated:
            time.sleep(0.001)
        short_outcome = pool.submit(engine.run, short).result(timeout=30)
        # The long one was decoding when the short one joined and is still going after it left.
        assert short_outcome.finish_reason in ("length", "stop")
        assert not long.done.is_set()
        assert long_future.result(timeout=60).finish_reason in ("length", "stop")


def test_same_seed_same_output(
    loaded: LoadedModel, connection: redis.Redis, settings: Settings, engine: Engine
) -> None:
    def sample(seed: int) -> list[int]:
        sequence = sequence_for(loaded, connection, settings, job("Hi", 20, temperature=1.0, seed=seed))
        engine.run(sequence)
        return sequence.generated

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
