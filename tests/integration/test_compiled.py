"""WORKER_COMPILE: the engine on a compiled language model, and its fallback to eager."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import redis

from shared.settings import Settings
from tests.integration.conftest import SequenceFactory, decode
from tests.integration.test_engine import PROMPTS, job, reference_tokens
from worker.compiled import CompiledForward, compile_language_model, is_compiled
from worker.engine import Engine
from worker.model import LoadedModel, load_model


def greedy_run(engine: Engine, sequence_for: SequenceFactory, lengths: tuple[int, ...]) -> list[list[int]]:
    requests = [job(text, n, temperature=0.0) for text, n in zip(PROMPTS, lengths, strict=True)]
    sequences = [sequence_for(request) for request in requests]
    with ThreadPoolExecutor(len(sequences)) as pool:
        list(pool.map(partial(decode, engine), sequences))
    return [sequence.generated for sequence in sequences]


def started(loaded: LoadedModel, connection: redis.Redis) -> Iterator[Engine]:
    engine = Engine(loaded, connection, max_batch=8)
    engine.start()
    yield engine
    engine.stop()


class BackendFailure(RuntimeError):
    pass


def failing_backend(graph: Any, example_inputs: Any) -> Any:
    raise BackendFailure("this backend compiles nothing")


@pytest.fixture(scope="module")
def failing(engine_settings: Settings) -> LoadedModel:
    """A model of its own (compiling changes it in place), compiled with a backend that fails."""
    loaded = load_model(engine_settings)
    compile_language_model(loaded.model, "default", backend=failing_backend)
    loaded.compiled = True
    return loaded


def test_a_failing_compile_falls_back_to_eager_and_loses_nothing(
    failing: LoadedModel,
    loaded: LoadedModel,
    connection: redis.Redis,
    sequence_for: SequenceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert is_compiled(failing.model)
    with caplog.at_level(logging.ERROR, logger="worker.compiled"):
        for engine in started(failing, connection):
            generated = greedy_run(engine, sequence_for, (12, 9, 15))
    assert not is_compiled(failing.model)
    assert "running eagerly from now on" in caplog.text
    forward = failing.model.model.language_model.forward
    assert isinstance(forward, CompiledForward) and not forward.active
    for text, n, tokens in zip(PROMPTS, (12, 9, 15), generated, strict=True):
        expected = reference_tokens(loaded, job(text, n, temperature=0.0))
        assert tokens == expected[: len(tokens)] and tokens


def test_the_compiled_engine_decodes_as_generate_does(
    engine_settings: Settings, loaded: LoadedModel, connection: redis.Redis, sequence_for: SequenceFactory
) -> None:
    # Inductor, for real: the first steps compile (tens of seconds on a small CPU).
    compiled = load_model(engine_settings.model_copy(update={"worker_compile": "default"}))
    assert compiled.compiled and is_compiled(compiled.model)
    for engine in started(compiled, connection):
        generated = greedy_run(engine, sequence_for, (10, 6, 14))
    assert is_compiled(compiled.model), "the compiled forward fell back to eager"
    for text, n, tokens in zip(PROMPTS, (10, 6, 14), generated, strict=True):
        expected = reference_tokens(loaded, job(text, n, temperature=0.0))
        assert tokens == expected[: len(tokens)] and tokens
