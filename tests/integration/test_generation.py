"""The sampling parameters at the token level: the engine on the tiny model, in-process."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import SequenceFactory, make_job
from worker.engine import Engine
from worker.errors import InvalidRequest
from worker.model import LoadedModel
from worker.sampler import resolve
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


def test_unseeded_sampling_is_not_replayed_from_an_earlier_seed(generated_ids: Any) -> None:
    generated_ids(temperature=1.0, seed=7)
    after_seeded = generated_ids(temperature=1.0)
    generated_ids(temperature=1.0, seed=7)
    assert generated_ids(temperature=1.0) != after_seeded


def test_logit_bias_outside_the_vocabulary_is_refused(loaded: LoadedModel) -> None:
    with pytest.raises(InvalidRequest) as raised:
        prepare(loaded, make_job(logit_bias={loaded.vocab_size: 1.0}))
    assert raised.value.param == "logit_bias"
