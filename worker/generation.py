"""Runs one job's generation, streaming every decoding step into its session."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from shared.events import SessionStatus, usage_of
from shared.jobs import GenerationJob, SamplingParams
from worker.model import LoadedModel
from worker.output import OutputParser
from worker.prompt import prompt_opens_reasoning
from worker.reasoning import ReasoningSplitter, TextDelta
from worker.sampling import SamplingProcessor, needs_processing, reseed
from worker.session_writer import SessionWriter
from worker.verdict import PreparedPrompt

log = logging.getLogger(__name__)

IM_START = "<|im_start|>"


@dataclass
class Outcome:
    status: SessionStatus
    finish_reason: str
    usage: dict[str, Any]


class SessionStep(StoppingCriteria):
    """Called by ``generate()`` after every decoding step.

    It hands the new token to the session (one Redis round trip that also reads the
    cancel flag) and stops generation as soon as a cancel has been requested or the
    answer reached a stop string.
    """

    def __init__(self, writer: SessionWriter, parser: OutputParser, eos_token_ids: frozenset[int]) -> None:
        self._writer = writer
        self._parser = parser
        self._eos = eos_token_ids
        self.generated = 0
        self.last_token: int | None = None

    def emit(self, delta: TextDelta) -> None:
        if delta:
            self._writer.emit(self._writer.chunks.delta(delta.content, delta.reasoning))

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        token = int(input_ids[0, -1])
        self.generated += 1
        self.last_token = token
        if token not in self._eos:
            self.emit(self._parser.push(token))
        done = self._writer.flush() or self._parser.stopped
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def generate_kwargs(loaded: LoadedModel, sampling: SamplingParams, prompt: PreparedPrompt) -> dict[str, Any]:
    """``generate()`` arguments; what the request leaves unset comes from the checkpoint's
    generation_config."""
    defaults = loaded.generation_config
    temperature = sampling.temperature if sampling.temperature is not None else defaults.temperature
    do_sample = bool(temperature) and temperature > 0
    repetition_penalty = sampling.repetition_penalty or defaults.repetition_penalty or 1.0
    kwargs: dict[str, Any] = {
        "max_new_tokens": prompt.max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": loaded.tokenizer.pad_token_id,
        # Applied by SamplingProcessor with the other penalties, never twice.
        "repetition_penalty": 1.0,
    }
    if do_sample:
        kwargs["temperature"] = temperature
        kwargs["top_p"] = sampling.top_p if sampling.top_p is not None else defaults.top_p
        kwargs["top_k"] = sampling.top_k if sampling.top_k is not None else defaults.top_k
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if needs_processing(sampling, repetition_penalty):
        processor = SamplingProcessor(sampling, repetition_penalty, prompt.prompt_ids)
        kwargs["logits_processor"] = LogitsProcessorList([processor])
    return kwargs


def finish_reason(step: SessionStep, parser: OutputParser, loaded: LoadedModel, max_new_tokens: int) -> str:
    if parser.stopped or step.last_token in loaded.eos_token_ids:
        return "stop"
    return "length" if step.generated >= max_new_tokens else "stop"


def generate(
    loaded: LoadedModel, job: GenerationJob, prompt: PreparedPrompt, writer: SessionWriter
) -> Outcome:
    im_start_id = loaded.tokenizer.convert_tokens_to_ids(IM_START)
    splitter = ReasoningSplitter(
        loaded.tokenizer,
        loaded.think_start_id,
        loaded.think_end_id,
        in_reasoning=prompt_opens_reasoning(prompt.prompt_ids, loaded, im_start_id),
    )
    parser = OutputParser(splitter, job.sampling.stop)
    step = SessionStep(writer, parser, loaded.eos_token_ids)
    reseed(job.sampling.seed)
    with torch.inference_mode():
        loaded.model.generate(
            **prompt.inputs,
            **generate_kwargs(loaded, job.sampling, prompt),
            stopping_criteria=StoppingCriteriaList([step]),
        )
    step.emit(parser.flush())
    usage = usage_of(len(prompt.prompt_ids), step.generated, parser.reasoning_tokens)
    if writer.cancel_requested:
        return Outcome(SessionStatus.CANCELLED, "cancelled", usage)
    return Outcome(SessionStatus.FINISHED, finish_reason(step, parser, loaded, prompt.max_new_tokens), usage)
