"""Turns a job into a sequence ready for the engine: checked prompt, sampling, output parser."""

from __future__ import annotations

from typing import Any

import torch

from shared.jobs import GenerationJob
from worker.media.loader import Media
from worker.model import LoadedModel
from worker.output import OutputParser
from worker.prompt import prompt_opens_reasoning
from worker.reasoning import ReasoningSplitter
from worker.sampler import resolve
from worker.sequence import Sequence
from worker.session_writer import SessionWriter
from worker.verdict import prepare

# Per-token inputs of the processor that grow with the text (the rest is pixel data).
_PER_TOKEN_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids")


def build_sequence(
    loaded: LoadedModel, job: GenerationJob, writer: SessionWriter, media: list[Media] | None = None
) -> Sequence:
    """Raises InvalidRequest (worker.errors) for a request that cannot be served."""
    prompt = prepare(loaded, job, media)
    splitter = ReasoningSplitter(
        loaded.decoder,
        loaded.think_start_id,
        loaded.think_end_id,
        in_reasoning=prompt_opens_reasoning(prompt.prompt_ids, loaded),
    )
    return Sequence(
        inputs=prompt.inputs,
        prompt_tokens=len(prompt.prompt_ids),
        max_new_tokens=prompt.max_new_tokens,
        sampling=resolve(job.sampling, loaded.generation_config, loaded.device, prompt.prompt_ids),
        parser=OutputParser(splitter, job.sampling.stop),
        writer=writer,
        eos_token_ids=loaded.eos_token_ids,
    )


def continue_after(sequence: Sequence, tokens: tuple[int, ...]) -> None:
    """Make a new sequence continue an earlier attempt that generated ``tokens``.

    The parser replays the tokens (rebuilding the events already written), and the prompt
    grows by them, so that the prefill computes the cache the earlier worker had and the
    first draw is the one at position ``len(tokens)``.
    """
    sequence.replay(tokens)
    if sequence.finished or not tokens:
        return
    sequence.inputs = extend_inputs(sequence.inputs, tokens)


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
