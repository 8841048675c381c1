"""The worker's verdict on a request: checks only the model can make, before generating.

A refusal here becomes the session's first event, an error that the gateway answers with
a 400, so a stream never starts only to fail on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.jobs import GenerationJob, SamplingParams
from worker.errors import InvalidRequest
from worker.media.loader import Media
from worker.model import LoadedModel
from worker.prompt import build_inputs


@dataclass
class PreparedPrompt:
    """Model inputs of a request that passed every check the worker makes."""

    inputs: Any
    prompt_ids: list[int]
    max_new_tokens: int


def check_logit_bias(loaded: LoadedModel, sampling: SamplingParams) -> None:
    unknown = sorted(token for token in sampling.logit_bias if not 0 <= token < loaded.vocab_size)
    if unknown:
        raise InvalidRequest(
            f"logit_bias names token ids outside the vocabulary (0 to {loaded.vocab_size - 1}): "
            f"{', '.join(map(str, unknown[:10]))}.",
            param="logit_bias",
        )


def completion_budget(max_context_tokens: int, prompt_tokens: int, sampling: SamplingParams) -> int:
    """How many tokens the completion may have.

    A prompt that fills the context is refused. A ``max_tokens`` the client asked for that
    does not fit beside the prompt is refused as OpenAI and vLLM do; the server's default
    shrinks to the room left instead, and such a completion ends with ``length``.
    """
    room = max_context_tokens - prompt_tokens
    if room <= 0:
        raise InvalidRequest(
            f"This model's maximum context length is {max_context_tokens} tokens, "
            f"but the prompt has {prompt_tokens} tokens.",
            param="messages",
        )
    asked = sampling.max_new_tokens
    if asked > room and sampling.max_tokens_param is not None:
        raise InvalidRequest(
            f"This model's maximum context length is {max_context_tokens} tokens. However, you "
            f"requested {prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in "
            f"the completion). Please reduce the length of the messages or completion.",
            param=sampling.max_tokens_param,
        )
    return min(asked, room)


def prepare(loaded: LoadedModel, job: GenerationJob, media: list[Media] | None = None) -> PreparedPrompt:
    """Build the model inputs from the messages and their decoded media (in prompt order).

    Raises InvalidRequest for a request that cannot be served: a prompt (visual tokens
    included) longer than the context, a token budget that does not fit, bad logit_bias.
    The context is the shortest of MAX_MODEL_LEN, the model's own maximum and what the
    worker's KV cache budget holds for one sequence alone, so every request accepted here
    can join the batch, at the latest once it runs alone.
    """
    check_logit_bias(loaded, job.sampling)
    inputs = build_inputs(loaded, job.messages, media, job.tools)
    prompt_ids: list[int] = inputs["input_ids"][0].tolist()
    budget = completion_budget(loaded.max_context_tokens, len(prompt_ids), job.sampling)
    if job.n > 1 and not loaded.kv.fits(job.n, len(prompt_ids) + budget):
        raise InvalidRequest(
            f"{job.n} choices of {len(prompt_ids) + budget} tokens each (prompt and completion) do "
            "not fit this worker's KV cache together; ask for fewer choices or fewer tokens.",
            param="n",
        )
    return PreparedPrompt(inputs, prompt_ids, budget)
