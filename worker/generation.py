"""Turns a job into a sequence ready for the engine: prompt, checks, sampling, output."""

from __future__ import annotations

from typing import Any

from shared.jobs import GenerationJob
from worker.model import LoadedModel
from worker.prompt import build_inputs, prompt_opens_reasoning
from worker.reasoning import ReasoningSplitter
from worker.sampler import resolve
from worker.sequence import Sequence
from worker.session_writer import SessionWriter

IM_START = "<|im_start|>"


class InvalidRequest(Exception):
    """The request cannot be served as asked (the client's fault, not the worker's)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def prepare(loaded: LoadedModel, job: GenerationJob, writer: SessionWriter) -> Sequence:
    """Build the model inputs and checks; raises InvalidRequest for a request that cannot be served."""
    inputs: Any = build_inputs(loaded, job.messages)
    prompt_ids: list[int] = inputs["input_ids"][0].tolist()
    room = loaded.max_context_tokens - len(prompt_ids)
    if room <= 0:
        raise InvalidRequest(
            f"This model's maximum context length is {loaded.max_context_tokens} tokens, "
            f"but the prompt has {len(prompt_ids)} tokens.",
            param="messages",
        )
    im_start_id = loaded.decoder.convert_tokens_to_ids(IM_START)
    splitter = ReasoningSplitter(
        loaded.decoder,
        loaded.think_start_id,
        loaded.think_end_id,
        in_reasoning=prompt_opens_reasoning(prompt_ids, loaded, im_start_id),
    )
    return Sequence(
        inputs=inputs,
        prompt_tokens=len(prompt_ids),
        max_new_tokens=min(job.sampling.max_new_tokens, room),
        sampling=resolve(job.sampling, loaded.generation_config, loaded.device),
        splitter=splitter,
        writer=writer,
        eos_token_ids=loaded.eos_token_ids,
    )
