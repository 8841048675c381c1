"""The batching engine against transformers' own generate(), on the tiny checkpoint."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial

import pytest
import redis
import torch
from PIL import Image
from transformers import DynamicCache

from shared.events import dumps
from shared.jobs import GenerationJob, ImagePart
from shared.session_scripts import Cancel, SyncScripts
from shared.settings import Settings
from tests.integration.conftest import SequenceFactory, decode, make_job
from worker import greedy_scan, metrics
from worker.batch import SlotBatch, dynamic_layers
from worker.engine import Engine
from worker.errors import GenerationFailed, InvalidRequest
from worker.generation import continue_after
from worker.kv_budget import KvBudget
from worker.media.loader import Media
from worker.model import LoadedModel
from worker.sequence import Outcome, Sequence
from worker.verdict import prepare

PROMPTS = ["Hi", "A much longer prompt, so that the rows of the batch have different lengths.", "Third"]


def job(text: str, max_tokens: int, **sampling: object) -> GenerationJob:
    return make_job(text, max_new_tokens=max_tokens, **sampling)


def reference_tokens(
    loaded: LoadedModel, request: GenerationJob, media: list[Media] | None = None
) -> list[int]:
    """Greedy tokens from transformers' generate(), the ground truth for the engine."""
    prompt = prepare(loaded, request, media)
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


def scanned_rows() -> float:
    """Greedy rows the engine has picked with the bfloat16 scan so far, in this process."""
    total = 0.0
    for outcome in ("decided", "float32"):
        sample = metrics.REGISTRY.get_sample_value("qwen3vl_greedy_scan_rows_total", {"outcome": outcome})
        total += sample or 0.0
    return total


def test_greedy_rows_are_scanned_unless_something_needs_their_logits(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    if not greedy_scan.supported(loaded.model.lm_head.weight):
        pytest.skip("this CPU has no bfloat16 instructions: greedy rows use float32 logits")
    before = scanned_rows()
    request = job(PROMPTS[1], 30, temperature=0.0)
    sequence = sequence_for(request)
    decode(engine, sequence)
    assert sequence.generated == reference_tokens(loaded, request)[: len(sequence.generated)]
    assert scanned_rows() - before == len(sequence.generated)  # every token, the first too
    # A penalty or a bias needs the logits: such a row is never scanned.
    before = scanned_rows()
    for sampling in ({"repetition_penalty": 1.3}, {"logit_bias": {11: 5.0}}):
        decode(engine, sequence_for(job(PROMPTS[1], 10, temperature=0.0, **sampling)))
    assert scanned_rows() == before


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


def test_a_prompt_that_arrives_draws_its_first_token_in_the_running_rows_step(
    loaded: LoadedModel, sequence_for: SequenceFactory, engine: Engine
) -> None:
    running_job, arriving_job = (
        job(text, n, temperature=0.0, logit_bias=no_eos(loaded))
        for text, n in (
            (PROMPTS[0], 40),
            (PROMPTS[1], 10),
        )
    )
    running, arriving = sequence_for(running_job), sequence_for(arriving_job)
    # Each lm_head call notes how many tokens the running row had drawn before it.
    drawn_before: list[int] = []
    project = engine._head.project

    def noting(hidden: torch.Tensor) -> torch.Tensor:
        drawn_before.append(len(running.generated))
        return project(hidden)

    engine._head.project = noting  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        running_future = pool.submit(decode, engine, running)
        while len(running.generated) < 3:
            time.sleep(0.001)
        arriving_outcome = pool.submit(decode, engine, arriving).result(timeout=30)
        assert not running.done.is_set()  # it arrived and left while the other row ran
        assert running_future.result(timeout=60).finish_reason == "length"
    assert arriving_outcome.finish_reason == "length"
    # No lm_head call of its own for the arriving prompt: one per token of the running row.
    assert len([n for n in drawn_before if n < len(running.generated)]) == len(running.generated)
    assert arriving.generated == reference_tokens(loaded, arriving_job)
    assert running.generated == reference_tokens(loaded, running_job)


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
        expected = reference_tokens(loaded, request, items)
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


# --- memory admission -------------------------------------------------------------------


def with_kv_tokens(loaded: LoadedModel, tokens: int) -> LoadedModel:
    """The same model, with a KV cache budget of ``tokens`` token slots."""
    per_token = loaded.kv.bytes_per_token
    return replace(loaded, kv=KvBudget(per_token, tokens * per_token))


def no_eos(loaded: LoadedModel) -> dict[int, float]:
    """A logit_bias that bans every end-of-sequence token: the row runs to its budget."""
    return dict.fromkeys(loaded.eos_token_ids, -100.0)


def prompt_tokens(loaded: LoadedModel, request: GenerationJob) -> int:
    return len(prepare(loaded, request).prompt_ids)


class RecordingEngine(Engine):
    """An engine that records how many rows each decoding step decodes."""

    def __init__(self, loaded: LoadedModel, connection: redis.Redis, batch: SlotBatch | None = None) -> None:
        super().__init__(loaded, connection, max_batch=8)
        self.widths: list[int] = []
        self.prefilled_together: list[int] = []  # rows of each prefill of text prompts
        if batch is not None:
            self._batch = batch

    def _decode_step(self) -> None:
        self.widths.append(len(self._active))
        super()._decode_step()

    def _prefill_texts(self, rows: list[Sequence]) -> None:
        self.prefilled_together.append(len(rows))
        super()._prefill_texts(rows)

    def run_in_order(self, pool: ThreadPoolExecutor, sequences: list[Sequence]) -> list[Future[Outcome]]:
        """Hand the sequences over in this order before starting: it finds them all waiting."""
        futures = []
        for count, sequence in enumerate(sequences, start=1):
            futures.append(pool.submit(decode, self, sequence))
            while self._pending.qsize() < count:
                time.sleep(0.001)
        self.start()
        return futures


def test_a_request_that_cannot_fit_the_kv_budget_alone_is_refused_naming_the_part(
    loaded: LoadedModel,
) -> None:
    prompt = prompt_tokens(loaded, job(PROMPTS[1], 1))
    small = with_kv_tokens(loaded, prompt + 10)
    with pytest.raises(InvalidRequest) as long_prompt:
        prepare(small, job(PROMPTS[1] + " " + PROMPTS[1], 1))
    assert long_prompt.value.param == "messages"
    assert f"maximum context length is {prompt + 10} tokens" in str(long_prompt.value)
    with pytest.raises(InvalidRequest) as long_budget:
        prepare(small, job(PROMPTS[1], 11, max_tokens_param="max_tokens"))
    assert long_budget.value.param == "max_tokens"
    assert f"({prompt} in the messages, 11 in the completion)" in str(long_budget.value)
    assert prepare(small, job(PROMPTS[1], 10, max_tokens_param="max_tokens")).max_new_tokens == 10
    # Without max_tokens, the server's default shrinks to the room the budget leaves.
    assert prepare(small, job(PROMPTS[1], 256)).max_new_tokens == 10


def test_max_model_len_bounds_the_context_below_the_models_own(loaded: LoadedModel) -> None:
    prompt = prompt_tokens(loaded, job(PROMPTS[0], 1))
    shorter = replace(loaded, max_model_len=prompt + 5)
    assert shorter.max_context_tokens == prompt + 5
    with pytest.raises(InvalidRequest) as refused:
        prepare(shorter, job(PROMPTS[0], 6, max_tokens_param="max_completion_tokens"))
    assert refused.value.param == "max_completion_tokens"


@pytest.mark.parametrize(("rows_that_fit", "widest_step"), [(1, 1), (2, 2)])
def test_requests_wait_for_kv_room_and_are_all_served(
    loaded: LoadedModel,
    connection: redis.Redis,
    engine_settings: Settings,
    rows_that_fit: int,
    widest_step: int,
) -> None:
    requests = [job(text, 30, temperature=0.0, logit_bias=no_eos(loaded)) for text in PROMPTS[:2]]
    longest = max(prompt_tokens(loaded, request) + 30 for request in requests)
    # Room for this many rows as long as the longest: one alone, never two at once.
    budgeted = with_kv_tokens(loaded, rows_that_fit * longest)
    sequences = [SequenceFactory(budgeted, connection, engine_settings)(r) for r in requests]
    engine = RecordingEngine(budgeted, connection)
    try:
        with ThreadPoolExecutor(len(sequences)) as pool:
            outcomes = [f.result(timeout=60) for f in engine.run_in_order(pool, sequences)]
    finally:
        engine.stop()
    assert max(engine.widths) == widest_step
    # Prompts that arrive together are prefilled together, when the KV budget has room.
    assert engine.prefilled_together == [widest_step] * (2 // widest_step)
    for request, sequence, outcome in zip(requests, sequences, outcomes, strict=True):
        assert outcome.finish_reason == "length"
        assert sequence.generated == reference_tokens(loaded, request)


def test_a_request_waiting_for_room_can_be_cancelled(
    loaded: LoadedModel, connection: redis.Redis, engine_settings: Settings
) -> None:
    running_job, waiting_job = (job(text, 5000, logit_bias=no_eos(loaded)) for text in PROMPTS[:2])
    reserved = prompt_tokens(loaded, waiting_job) + 5000
    budgeted = with_kv_tokens(loaded, reserved)  # one row at a time
    running, waiting = (
        SequenceFactory(budgeted, connection, engine_settings)(r) for r in (running_job, waiting_job)
    )
    engine = RecordingEngine(budgeted, connection)
    try:
        with ThreadPoolExecutor(2) as pool:
            running_future, waiting_future = engine.run_in_order(pool, [running, waiting])
            cancel(connection, waiting_job.session_id)
            outcome = waiting_future.result(timeout=30)
            # It left the line while the other still decoded, never having joined the batch.
            assert outcome.finish_reason == "cancelled" and waiting.generated == []
            assert not running.done.is_set()
            cancel(connection, running_job.session_id)
            assert running_future.result(timeout=30).finish_reason == "cancelled"
    finally:
        engine.stop()
    assert max(engine.widths) == 1


def cancel(connection: redis.Redis, session_id: str) -> None:
    call = Cancel(
        session_id, flag_seconds=60, ttl=60, usage_json=dumps({}), role_events=("",), finish_events=("",)
    )
    assert SyncScripts(connection).run(call) == "running"


def test_a_failing_prefill_fails_only_its_request(
    loaded: LoadedModel, sequence_for: SequenceFactory, connection: redis.Redis
) -> None:
    good_job = job(PROMPTS[1], 30, temperature=0.0, logit_bias=no_eos(loaded))
    good, bad = sequence_for(good_job), sequence_for(job(PROMPTS[2], 30))
    # A token the embedding table does not have: the model raises during this prefill.
    bad.inputs["input_ids"][0, -1] = loaded.model.get_input_embeddings().num_embeddings
    engine = RecordingEngine(loaded, connection)
    try:
        with ThreadPoolExecutor(2) as pool:
            good_future, bad_future = engine.run_in_order(pool, [good, bad])
            failure = bad_future.exception(timeout=30)
            assert isinstance(failure, GenerationFailed) and failure.code == "generation_failed"
            assert good_future.result(timeout=60).finish_reason == "length"
    finally:
        engine.stop()
    # Tried together first; when that failed, one by one, so that only the bad one failed.
    assert engine.prefilled_together == [2]
    assert good.generated == reference_tokens(loaded, good_job)


class FailingStep(Engine):
    """An engine whose first step drawing two rows at once fails (after the rows' joins)."""

    def __init__(self, loaded: LoadedModel, connection: redis.Redis) -> None:
        super().__init__(loaded, connection, max_batch=8)
        self.failed = False

    def _sample(self, logits: torch.Tensor, sequences: list[Sequence]) -> None:
        if not self.failed and len(sequences) == 2:
            self.failed = True
            raise RuntimeError("the step failed")
        super()._sample(logits, sequences)


def test_a_failing_step_fails_the_rows_arriving_in_it_too_and_the_engine_goes_on(
    loaded: LoadedModel, sequence_for: SequenceFactory, connection: redis.Redis
) -> None:
    running = sequence_for(job(PROMPTS[0], 40, temperature=0.0, logit_bias=no_eos(loaded)))
    arriving = sequence_for(job(PROMPTS[1], 10, temperature=0.0))
    later_job = job(PROMPTS[2], 10, temperature=0.0, logit_bias=no_eos(loaded))
    later = sequence_for(later_job)
    engine = FailingStep(loaded, connection)
    engine.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            running_future = pool.submit(decode, engine, running)
            while len(running.generated) < 3:
                time.sleep(0.001)
            # Its first token is drawn in the running row's next step, which fails.
            arriving_future = pool.submit(decode, engine, arriving)
            for future in (running_future, arriving_future):
                failure = future.exception(timeout=30)
                assert isinstance(failure, GenerationFailed) and failure.code == "generation_failed"
        assert decode(engine, later).finish_reason == "length"
    finally:
        engine.stop()
    assert engine.failed and not arriving.generated
    assert later.generated == reference_tokens(loaded, later_job)


class FailingJoin(SlotBatch):
    """A batch whose ``fail_at``-th join gets a cache whose last layer does not match."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.joins, self.fail_at = 0, fail_at

    def add(
        self,
        cache: DynamicCache,
        length: int,
        device: torch.device,
        copies: int = 1,
        mask: torch.Tensor | None = None,
    ) -> list[int]:
        self.joins += 1
        if self.joins == self.fail_at:
            last = dynamic_layers(cache)[-1]
            assert last.keys is not None
            last.keys = last.keys[:, :1]  # one KV head too few: the last layer cannot join
        return super().add(cache, length, device, copies, mask)


def test_a_failed_join_fails_only_the_joining_request(
    loaded: LoadedModel, sequence_for: SequenceFactory, connection: redis.Redis
) -> None:
    requests = [job(text, 30, temperature=0.0, logit_bias=no_eos(loaded)) for text in PROMPTS]
    sequences = [sequence_for(request) for request in requests]
    engine = RecordingEngine(loaded, connection, batch=FailingJoin(fail_at=2))
    engine.max_prefill_rows = 1  # each request joins on its own: the second join fails
    try:
        with ThreadPoolExecutor(len(sequences)) as pool:
            first, failed, third = engine.run_in_order(pool, sequences)
            assert isinstance(failed.exception(timeout=30), GenerationFailed)
            outcomes = [first.result(timeout=60), third.result(timeout=60)]
    finally:
        engine.stop()
    # The rows around the failed join decode exactly as if it had never been tried.
    assert max(engine.widths) == 2
    for index, outcome in zip((0, 2), outcomes, strict=True):
        assert outcome.finish_reason == "length"
        assert sequences[index].generated == reference_tokens(loaded, requests[index])
