"""The batching engine against transformers' own generate(), on the tiny checkpoint."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch
from PIL import Image

from shared.jobs import GenerationJob, ImagePart
from tests.integration.conftest import SequenceFactory, decode, make_job
from worker.engine import Engine
from worker.generation import continue_after
from worker.media.loader import Media
from worker.model import LoadedModel
from worker.sequence import Outcome
from worker.verdict import prepare

PROMPTS = ["Hi", "A much longer prompt, so that the rows of the batch have different lengths.", "Third"]


def job(text: str, max_tokens: int, **sampling: object) -> GenerationJob:
    return make_job(text, max_new_tokens=max_tokens, **sampling)


def reference_tokens(loaded: LoadedModel, request: GenerationJob) -> list[int]:
    """Greedy tokens from transformers' generate(), the ground truth for the engine."""
    prompt = prepare(loaded, request)
    n = request.sampling.max_new_tokens
    with torch.inference_mode():
        output = loaded.model.generate(
            **prompt.inputs,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            top_p=None,
            top_k=None,
            temperature=None,
        )
    return [int(t) for t in output[0, len(prompt.prompt_ids) :].tolist()]


def test_batched_greedy_decoding_matches_generate(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    # Different lengths and different output budgets, so rows join and leave the batch.
    requests = [
        job(text, max_tokens, temperature=0.0) for text, max_tokens in zip(PROMPTS, (40, 25, 60), strict=True)
    ]
    # eos ends a row early in the engine but not in generate(min_new_tokens): compare up to it.
    sequences = [sequence_for(request) for request in requests]
    with ThreadPoolExecutor(len(sequences)) as pool:
        outcomes: list[Outcome] = list(pool.map(partial(decode, engine), sequences))
    for request, sequence, outcome in zip(requests, sequences, outcomes, strict=True):
        expected = reference_tokens(loaded, request)
        assert sequence.generated == expected[: len(sequence.generated)]
        assert outcome.usage["completion_tokens"] == len(sequence.generated)
        if outcome.finish_reason == "length":
            assert len(sequence.generated) == request.sampling.max_new_tokens


def test_rows_run_together_and_leave_independently(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    short = sequence_for(job("short", 5, temperature=0.0))
    long = sequence_for(job("long", 300, temperature=0.0))
    with ThreadPoolExecutor(2) as pool:
        long_future = pool.submit(decode, engine, long)
        while not long.generated:
            time.sleep(0.001)
        short_outcome = pool.submit(decode, engine, short).result(timeout=30)
        # The long one was decoding when the short one joined and is still going after it left.
        assert short_outcome.finish_reason in ("length", "stop")
        assert not long.done.is_set()
        assert long_future.result(timeout=60).finish_reason in ("length", "stop")


def test_same_seed_same_output(loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine) -> None:
    def sample(seed: int) -> list[int]:
        sequence = sequence_for(job("Hi", 20, temperature=1.0, seed=seed))
        decode(engine, sequence)
        return sequence.generated

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_image_prompts_batch_with_text_and_match_generate(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    # An image shifts the 3D rotary positions of everything after it (rope deltas): a
    # row decoded in a batch must still get its own positions.
    image = Image.radial_gradient("L").convert("RGB").resize((96, 64))
    with_image = make_job("Describe", max_new_tokens=30, temperature=0.0)
    url_part = ImagePart(url="http://media.test/picture.png", param="messages[0].content[1]")
    with_image.messages[0].content.append(url_part)
    text_only = job(PROMPTS[1], 30, temperature=0.0)
    media: list[list[Media]] = [[image], []]
    sequences = [sequence_for(with_image, media[0]), sequence_for(text_only)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(partial(decode, engine), sequences))
    for request, sequence, items in zip([with_image, text_only], sequences, media, strict=True):
        prompt = prepare(loaded, request, items)
        with torch.inference_mode():
            output = loaded.model.generate(
                **prompt.inputs,
                max_new_tokens=30,
                min_new_tokens=30,
                do_sample=False,
                top_p=None,
                top_k=None,
                temperature=None,
            )
        expected = [int(t) for t in output[0, len(prompt.prompt_ids) :].tolist()]
        assert sequence.generated == expected[: len(sequence.generated)]
        assert sequence.generated


def test_a_continuation_decodes_what_the_first_attempt_did(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    request = job(PROMPTS[1], 30, temperature=0.0)
    first = sequence_for(request)
    decode(engine, first)
    # Another worker takes over after 12 tokens: it replays them, then decodes the rest.
    taken_over = request.model_copy(update={"session_id": request.session_id + "-again"})
    second = sequence_for(taken_over)
    continue_after(second, tuple(first.generated[:12]))
    assert len(second.writer.events) == len(first.writer.events[: len(second.writer.events)])
    decode(engine, second)
    assert second.generated == first.generated
    rename = {request.session_id + "-again": request.session_id}
    assert [_renamed(e, rename) for e in second.writer.events] == first.writer.events


def _renamed(event: str, names: dict[str, str]) -> str:
    for new, old in names.items():
        event = event.replace(new, old)
    return event
