"""The sampling parameters at the token level: the engine on the tiny model, in-process."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from tests.integration.conftest import SequenceFactory, make_job
from worker.engine import Engine
from worker.errors import InvalidRequest
from worker.model import LoadedModel
from worker.sampler import resolve, sample_next
from worker.verdict import prepare

NEWLINE = 198


@pytest.fixture
def generated_ids(sequence_for: SequenceFactory, engine: Engine) -> Any:
    def run(**sampling: Any) -> list[int]:
        sequence = sequence_for(make_job(**sampling))
        engine.run(sequence)
        return sequence.generated

    return run


def test_greedy_decoding_repeats_without_penalties(generated_ids: Any) -> None:
    assert generated_ids(temperature=0) == [NEWLINE] * 12


def test_presence_penalty_makes_every_greedy_token_new(generated_ids: Any) -> None:
    ids = generated_ids(temperature=0, presence_penalty=2.0)
    assert len(set(ids)) == len(ids)


def test_frequency_penalty_grows_with_each_repetition(generated_ids: Any) -> None:
    # Unlike the presence penalty, a small one lets a token repeat a few times, not forever.
    ids = generated_ids(temperature=0, frequency_penalty=0.3)
    assert 1 < max(Counter(ids).values()) < 12


def test_repetition_penalty_also_counts_the_prompt(generated_ids: Any) -> None:
    ids = generated_ids(temperature=0, repetition_penalty=50.0)
    assert len(set(ids)) == len(ids)


def test_logit_bias_bans_and_forces(generated_ids: Any) -> None:
    assert NEWLINE not in generated_ids(temperature=0, logit_bias={NEWLINE: -100})
    assert generated_ids(temperature=1.0, seed=5, logit_bias={42: 100}) == [42] * 12


def test_unset_parameters_come_from_the_checkpoint(loaded: LoadedModel) -> None:
    job = make_job(temperature=1.0)
    row = resolve(job.sampling, loaded.generation_config, loaded.device)
    assert (row.top_p, row.top_k) == (0.95, 20)  # its generation_config.json
    assert row.repetition_penalty == 1.0 and not row.penalised
    job = make_job(temperature=1.0, top_p=0.5, top_k=0)
    row = resolve(job.sampling, loaded.generation_config, loaded.device)
    assert (row.top_p, row.top_k) == (0.5, 0)


def test_the_same_seed_samples_the_same_tokens(generated_ids: Any) -> None:
    first = generated_ids(temperature=1.0, seed=7)
    assert generated_ids(temperature=1.0, seed=7) == first
    assert generated_ids(temperature=1.0, seed=8) != first


# Plain sampling over the whole vocabulary: a top-k neighbour must not change its path.
SEEDED: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 7, "max_new_tokens": 24}


def test_a_seeded_request_samples_the_same_beside_other_requests(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine, generated_ids: Any
) -> None:
    alone = generated_ids(**SEEDED)
    assert len(set(alone)) > 1
    # Neighbours that take other sampling paths, decoding all the while (no early end).
    no_end = dict.fromkeys(loaded.eos_token_ids, -100.0)
    neighbours = [
        sequence_for(make_job("Other", max_new_tokens=200, temperature=1.0, top_k=5, logit_bias=no_end)),
        sequence_for(make_job("Third", max_new_tokens=200, temperature=0.8, top_p=0.5, logit_bias=no_end)),
    ]
    seeded = sequence_for(make_job(**SEEDED))
    with ThreadPoolExecutor(len(neighbours) + 1) as pool:
        running = [pool.submit(engine.run, neighbour) for neighbour in neighbours]
        while not all(neighbour.generated for neighbour in neighbours):
            time.sleep(0.001)
        pool.submit(engine.run, seeded).result(timeout=60)
        assert not any(neighbour.done.is_set() for neighbour in neighbours)  # they were batched with it
        for future in running:
            future.result(timeout=120)
    assert seeded.generated == alone


def test_a_seeded_request_resumes_at_any_token_from_its_history(
    loaded: LoadedModel, generated_ids: Any
) -> None:
    """A fresh sampler given the tokens before index i picks the token the engine picked."""
    generated = generated_ids(**SEEDED)
    job = make_job(**SEEDED)
    prompt = prepare(loaded, job)
    for index in (0, 5, len(generated) - 1):
        ids = torch.tensor([prompt.prompt_ids + generated[:index]], device=loaded.device)
        positions = torch.arange(ids.shape[1], device=loaded.device).view(1, 1, -1).expand(3, 1, -1)
        row = resolve(job.sampling, loaded.generation_config, loaded.device, prompt.prompt_ids)
        with torch.inference_mode():
            logits = loaded.model(input_ids=ids, position_ids=positions, logits_to_keep=1).logits
            token = sample_next(logits[:, -1], [row], [generated[:index]], [index])
        assert token == [generated[index]]


def test_unseeded_sampling_is_not_replayed_from_an_earlier_seed(generated_ids: Any) -> None:
    generated_ids(temperature=1.0, seed=7)
    after_seeded = generated_ids(temperature=1.0)
    generated_ids(temperature=1.0, seed=7)
    assert generated_ids(temperature=1.0) != after_seeded


def test_logit_bias_outside_the_vocabulary_is_refused(loaded: LoadedModel) -> None:
    with pytest.raises(InvalidRequest) as raised:
        prepare(loaded, make_job(logit_bias={loaded.vocab_size: 1.0}))
    assert raised.value.param == "logit_bias"
