"""Turns a job into a sequence ready for the engine: checked prompt, sampling, output parser."""

from __future__ import annotations

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
