"""Runs one job's generation, streaming every decoding step into its session."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from shared.events import SessionStatus, usage_of
from shared.jobs import GenerationJob, SamplingParams
from worker.errors import InvalidRequest
from worker.media.loader import MediaLoader
from worker.model import LoadedModel
from worker.prompt import build_inputs, prompt_opens_reasoning
from worker.reasoning import ReasoningSplitter, TextDelta
from worker.session_writer import SessionWriter

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
    cancel flag) and stops generation as soon as a cancel has been requested.
    """

    def __init__(
        self, writer: SessionWriter, splitter: ReasoningSplitter, eos_token_ids: frozenset[int]
    ) -> None:
        self._writer = writer
        self._splitter = splitter
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
            self.emit(self._splitter.push(token))
        cancelled = self._writer.flush()
        return torch.full((input_ids.shape[0],), cancelled, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def sampling_kwargs(loaded: LoadedModel, sampling: SamplingParams, max_new_tokens: int) -> dict[str, Any]:
    defaults = loaded.generation_config
    temperature = sampling.temperature if sampling.temperature is not None else defaults.temperature
    do_sample = bool(temperature) and temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": loaded.tokenizer.pad_token_id,
    }
    if do_sample:
        kwargs["temperature"] = temperature
        kwargs["top_p"] = sampling.top_p if sampling.top_p is not None else defaults.top_p
        kwargs["top_k"] = sampling.top_k if sampling.top_k is not None else defaults.top_k
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if sampling.repetition_penalty is not None:
        kwargs["repetition_penalty"] = sampling.repetition_penalty
    return kwargs


@dataclass
class PreparedPrompt:
    """Model inputs of a request that passed every check the worker makes."""

    inputs: Any
    prompt_ids: list[int]
    max_new_tokens: int


def prepare(loaded: LoadedModel, job: GenerationJob, media: MediaLoader) -> PreparedPrompt:
    """Fetch and decode the media, build the model inputs.

    Raises InvalidRequest for a request that cannot be served: bad media, or a prompt
    (visual tokens included) longer than the context.
    """
    inputs = build_inputs(loaded, job.messages, media.load(job))
    prompt_ids: list[int] = inputs["input_ids"][0].tolist()
    room = loaded.max_context_tokens - len(prompt_ids)
    if room <= 0:
        raise InvalidRequest(
            f"This model's maximum context length is {loaded.max_context_tokens} tokens, "
            f"but the prompt has {len(prompt_ids)} tokens.",
            param="messages",
        )
    return PreparedPrompt(inputs, prompt_ids, min(job.sampling.max_new_tokens, room))


def generate(
    loaded: LoadedModel, job: GenerationJob, prompt: PreparedPrompt, writer: SessionWriter
) -> Outcome:
    inputs, prompt_ids, max_new_tokens = prompt.inputs, prompt.prompt_ids, prompt.max_new_tokens
    prompt_tokens = len(prompt_ids)
    im_start_id = loaded.tokenizer.convert_tokens_to_ids(IM_START)
    splitter = ReasoningSplitter(
        loaded.tokenizer,
        loaded.think_start_id,
        loaded.think_end_id,
        in_reasoning=prompt_opens_reasoning(prompt_ids, loaded, im_start_id),
    )
    step = SessionStep(writer, splitter, loaded.eos_token_ids)
    if job.sampling.seed is not None:
        torch.manual_seed(job.sampling.seed)
    with torch.inference_mode():
        loaded.model.generate(
            **inputs,
            **sampling_kwargs(loaded, job.sampling, max_new_tokens),
            stopping_criteria=StoppingCriteriaList([step]),
        )
    step.emit(splitter.flush())
    usage = usage_of(prompt_tokens, step.generated, splitter.reasoning_tokens)
    if writer.cancel_requested:
        return Outcome(SessionStatus.CANCELLED, "cancelled", usage)
    if step.last_token not in loaded.eos_token_ids and step.generated >= max_new_tokens:
        return Outcome(SessionStatus.FINISHED, "length", usage)
    return Outcome(SessionStatus.FINISHED, "stop", usage)
