"""Turns a job into a sequence ready for the engine: checked prompt, sampling, output parser."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from shared.events import split_stored_token
from shared.jobs import GenerationJob, SamplingParams
from worker.media.loader import Media
from worker.model import LoadedModel
from worker.output import OutputParser
from worker.prompt import prompt_opens_reasoning
from worker.reasoning import ReasoningSplitter
from worker.sampler import resolve
from worker.sequence import Sequence
from worker.session_writer import SessionWriter
from worker.steering import Steering
from worker.tool_calls import ToolCallExtractor
from worker.verdict import prepare

# Per-token inputs of the processor that grow with the text (the rest is pixel data).
_PER_TOKEN_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")


def build_sequences(
    loaded: LoadedModel, job: GenerationJob, writer: SessionWriter, media: list[Media] | None = None
) -> list[Sequence]:
    """The job's choices (n of them, sharing one prompt), ready for the engine.

    Raises InvalidRequest (worker.errors) for a request that cannot be served.
    """
    prompt = prepare(loaded, job, media)
    opens_reasoning = prompt_opens_reasoning(prompt.prompt_ids, loaded)
    sequences = []
    for index in range(job.n):
        sequence = Sequence(
            inputs=prompt.inputs,
            prompt_tokens=len(prompt.prompt_ids),
            max_new_tokens=prompt.max_new_tokens,
            sampling=resolve(_choice_sampling(job, index), loaded.generation_config, None, prompt.prompt_ids),
            parser=_parser(loaded, job, opens_reasoning, index),
            writer=writer,
            eos_token_ids=loaded.eos_token_ids,
            steering=_steering(loaded, job),
            token_texts=loaded.token_texts if job.sampling.logprobs else None,
            top_logprobs=job.sampling.top_logprobs,
            index=index,
        )
        sequence.begin()
        sequences.append(sequence)
    return sequences


def build_sequence(
    loaded: LoadedModel, job: GenerationJob, writer: SessionWriter, media: list[Media] | None = None
) -> Sequence:
    """The job's only choice (n = 1)."""
    (sequence,) = build_sequences(loaded, job.model_copy(update={"n": 1}), writer, media)
    return sequence


def _choice_sampling(job: GenerationJob, index: int) -> SamplingParams:
    """Choice i of a seeded request draws from its own seed, so each choice is reproducible."""
    sampling = job.sampling
    if index == 0 or sampling.seed is None:
        return sampling
    return sampling.model_copy(update={"seed": choice_seed(sampling.seed, index)})


def choice_seed(seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8, person=b"choice-seed").digest()
    return int.from_bytes(digest, "little") >> 1


def _parser(loaded: LoadedModel, job: GenerationJob, opens_reasoning: bool, index: int) -> OutputParser:
    splitter = ReasoningSplitter(
        loaded.decoder, loaded.think_start_id, loaded.think_end_id, in_reasoning=opens_reasoning
    )
    tools = ToolCallExtractor(f"{job.session_id}:{index}") if job.tools else None
    return OutputParser(splitter, job.sampling.stop, tools)


def _steering(loaded: LoadedModel, job: GenerationJob) -> Steering | None:
    matcher = loaded.grammars.matcher(job.constraint) if job.constraint is not None else None
    if matcher is None and job.sampling.thinking_budget is None:
        return None
    return Steering(loaded.thinking_end, job.sampling.thinking_budget, matcher, min(loaded.eos_token_ids))


def continue_after(group: list[Sequence] | Sequence, stored: tuple[int, ...]) -> None:
    """Make new sequences continue an earlier attempt that generated the ``stored`` tokens.

    The stored tokens (``shared.events.stored_token``: each choice's tokens, interleaved in
    the order they were generated) are replayed in that order, which rebuilds the events
    already written; each prompt grows by its own tokens, so that its prefill computes the
    cache the earlier worker had and its first draw is the next one.
    """
    sequences = group if isinstance(group, list) else [group]
    for value in stored:
        choice, token = split_stored_token(value)
        sequence = sequences[choice]
        if sequence.finished:
            raise ValueError(f"the stored output of choice {choice} goes on after its end")
        sequence.accept(token)
    for sequence in sequences:
        if not sequence.finished and sequence.generated:
            # A copy of the shared inputs: the choices' histories differ.
            sequence.inputs = extend_inputs(dict(sequence.inputs), tuple(sequence.generated))


def extend_inputs(inputs: Any, tokens: tuple[int, ...]) -> Any:
    ids = inputs["input_ids"]
    added = torch.tensor([list(tokens)], dtype=ids.dtype, device=ids.device)
    fills = {
        "input_ids": added,
        "attention_mask": torch.ones_like(added),
        "mm_token_type_ids": torch.zeros_like(added),
    }
    for name in _PER_TOKEN_INPUTS:
        if name in inputs:
            inputs[name] = torch.cat([inputs[name], fills[name].to(inputs[name].dtype)], dim=1)
    return inputs
