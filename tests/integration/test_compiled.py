"""WORKER_COMPILE: the engine on a compiled language model, and its fallback to eager."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import redis
import torch

from shared.settings import Settings
from tests.integration.conftest import SequenceFactory, decode
from tests.integration.test_engine import PROMPTS, job, reference_tokens
from worker.compiled import CompiledForward, compile_language_model, is_compiled
from worker.engine import Engine
from worker.model import LoadedModel, load_model
from worker.step_graphs import COLUMN_BUCKET, bucket_rows


def greedy_run(engine: Engine, sequence_for: SequenceFactory, lengths: tuple[int, ...]) -> list[list[int]]:
    requests = [job(text, n, temperature=0.0) for text, n in zip(PROMPTS, lengths, strict=True)]
    sequences = [sequence_for(request) for request in requests]
    with ThreadPoolExecutor(len(sequences)) as pool:
        list(pool.map(partial(decode, engine), sequences))
    return [sequence.generated for sequence in sequences]


def started(loaded: LoadedModel, connection: redis.Redis, cuda_graphs: bool = False) -> Iterator[Engine]:
    engine = Engine(loaded, connection, max_batch=8, cuda_graphs=cuda_graphs)
    engine.start()
    yield engine
    engine.stop()


class BackendFailure(RuntimeError):
    pass


def failing_backend(graph: Any, example_inputs: Any) -> Any:
    raise BackendFailure("this backend compiles nothing")


class StepShapes:
    """A backend that runs the traced graph as it is, noting the shapes of every call's tensors."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[tuple[int, ...], torch.dtype]]] = []

    def __call__(self, graph: Any, example_inputs: Any) -> Any:
        def run(*args: Any) -> Any:
            self.calls.append([(tuple(a.shape), a.dtype) for a in args if isinstance(a, torch.Tensor)])
            return graph.forward(*args)

        return run


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


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_only_decoding_steps_run_compiled_and_at_bucketed_shapes(
    engine_settings: Settings,
    loaded: LoadedModel,
    connection: redis.Redis,
    sequence_for: SequenceFactory,
    cuda_graphs: bool,
) -> None:
    # reduce-overhead records a CUDA graph for every new shape it meets: prompts of every
    # length, or a step whose cache grew by a column, would each record another. With
    # WORKER_CUDA_GRAPHS and a mode without graphs of its own, the step worker.step_graphs
    # runs (on a GPU, captures and replays) must be the compiled one.
    shapes = StepShapes()
    stepping = load_model(engine_settings)
    compile_language_model(stepping.model, "default", backend=shapes)
    stepping.compiled = True
    for engine in started(stepping, connection, cuda_graphs):
        generated = greedy_run(engine, sequence_for, (12, 9, 15))
        assert (engine._graphs is not None) == cuda_graphs
    assert len(shapes.calls) >= 14  # the longest request's steps, at least
    hidden_size = stepping.model.config.text_config.hidden_size
    for call in shapes.calls:
        masks = [shape for shape, dtype in call if dtype == torch.bool and len(shape) == 4]
        assert len(masks) == 1, call
        rows, _, _, columns = masks[0]
        assert rows == bucket_rows(rows) and columns % COLUMN_BUCKET == 0
        # One token per row: no prompt went through the compiled forward.
        assert ((rows, 1, hidden_size), torch.float32) in call
        assert not any(len(s) == 3 and s[1] > 1 and s[2] == hidden_size for s, _ in call)
    for text, n, tokens in zip(PROMPTS, (12, 9, 15), generated, strict=True):
        assert tokens == reference_tokens(loaded, job(text, n, temperature=0.0))[: len(tokens)] and tokens


def test_cuda_graphs_are_left_to_a_compile_mode_that_captures_its_own(
    loaded: LoadedModel, connection: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    reduce_overhead = dataclasses.replace(loaded, compiled=True, compiled_graphs=True)
    with caplog.at_level(logging.WARNING, logger="worker.engine"):
        engine = Engine(reduce_overhead, connection, max_batch=8, cuda_graphs=True)
    assert engine._graphs is None
    assert "captures graphs of its own" in caplog.text
