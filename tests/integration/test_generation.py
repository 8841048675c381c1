"""The sampling parameters at the token level: ``generate()`` on the tiny model, in-process."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from shared.jobs import ChatMessage, GenerationJob, SamplingParams, TextPart
from shared.settings import Settings
from worker.generation import generate_kwargs
from worker.model import LoadedModel, load_model
from worker.sampling import reseed
from worker.verdict import InvalidRequest, prepare

NEWLINE = 198


@pytest.fixture(scope="module")
def loaded(tiny_model: str) -> LoadedModel:
    return load_model(Settings(model_repo_id=tiny_model, device_map="cpu", torch_dtype="float32"))


def job_for(**sampling: Any) -> GenerationJob:
    return GenerationJob(
        session_id="s",
        model="m",
        created=0,
        messages=[ChatMessage(role="user", content=[TextPart(text="Hello")])],
        sampling=SamplingParams(**{"max_new_tokens": 12, **sampling}),
    )


def generated_ids(loaded: LoadedModel, **sampling: Any) -> list[int]:
    job = job_for(**sampling)
    prompt = prepare(loaded, job)
    reseed(job.sampling.seed)
    with torch.inference_mode():
        output = loaded.model.generate(**prompt.inputs, **generate_kwargs(loaded, job.sampling, prompt))
    ids: list[int] = output[0, len(prompt.prompt_ids) :].tolist()
    return ids


def test_greedy_decoding_repeats_without_penalties(loaded: LoadedModel) -> None:
    assert generated_ids(loaded, temperature=0) == [NEWLINE] * 12


def test_presence_penalty_makes_every_greedy_token_new(loaded: LoadedModel) -> None:
    ids = generated_ids(loaded, temperature=0, presence_penalty=2.0)
    assert len(set(ids)) == len(ids)


def test_frequency_penalty_grows_with_each_repetition(loaded: LoadedModel) -> None:
    # Unlike the presence penalty, a small one lets a token repeat a few times, not forever.
    ids = generated_ids(loaded, temperature=0, frequency_penalty=0.3)
    assert 1 < max(Counter(ids).values()) < 12


def test_logit_bias_bans_and_forces(loaded: LoadedModel) -> None:
    assert NEWLINE not in generated_ids(loaded, temperature=0, logit_bias={NEWLINE: -100})
    assert generated_ids(loaded, temperature=1.0, seed=5, logit_bias={42: 100}) == [42] * 12


def test_unset_parameters_come_from_the_checkpoint(loaded: LoadedModel) -> None:
    job = job_for(temperature=1.0)
    kwargs = generate_kwargs(loaded, job.sampling, prepare(loaded, job))
    assert (kwargs["top_p"], kwargs["top_k"]) == (0.95, 20)  # its generation_config.json
    # It sets no repetition penalty: neutral, so no processor is installed.
    assert kwargs["repetition_penalty"] == 1.0 and "logits_processor" not in kwargs
    job = job_for(temperature=1.0, top_p=0.5, top_k=0)
    kwargs = generate_kwargs(loaded, job.sampling, prepare(loaded, job))
    assert (kwargs["top_p"], kwargs["top_k"]) == (0.5, 0)


def test_the_same_seed_samples_the_same_tokens(loaded: LoadedModel) -> None:
    first = generated_ids(loaded, temperature=1.0, seed=7)
    assert generated_ids(loaded, temperature=1.0, seed=7) == first
    assert generated_ids(loaded, temperature=1.0, seed=8) != first


def test_unseeded_sampling_is_not_replayed_from_an_earlier_seed(loaded: LoadedModel) -> None:
    generated_ids(loaded, temperature=1.0, seed=7)
    after_seeded = generated_ids(loaded, temperature=1.0)
    generated_ids(loaded, temperature=1.0, seed=7)
    assert generated_ids(loaded, temperature=1.0) != after_seeded


def test_logit_bias_outside_the_vocabulary_is_refused(loaded: LoadedModel) -> None:
    with pytest.raises(InvalidRequest) as raised:
        prepare(loaded, job_for(logit_bias={loaded.vocab_size: 1.0}))
    assert raised.value.param == "logit_bias"
