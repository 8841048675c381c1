"""Prompts with images and video prefilled in pieces, between the batch's decoding steps."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import redis
import torch
from PIL import Image

from shared.jobs import GenerationJob, ImagePart, VideoPart
from tests.integration.conftest import SequenceFactory, decode, make_job
from tests.integration.test_engine import PROMPTS, job, no_eos, reference_tokens
from worker.batch import dynamic_layers
from worker.engine import Engine
from worker.media.loader import Media
from worker.media.video import VideoClip
from worker.media_prefill import media_prefill
from worker.model import LoadedModel
from worker.sequence import Sequence
from worker.verdict import prepare


def clip(frames: int = 8) -> VideoClip:
    shades = np.linspace(0, 255, frames, dtype=np.uint8)
    pixels = np.zeros((frames, 64, 96, 3), dtype=np.uint8)
    pixels[..., 0] = shades[:, None, None]
    pixels[:, :, :48, 1] = 200
    return VideoClip(
        frames=pixels,
        indices=list(range(frames)),
        timestamps=[i / 4 for i in range(frames)],
        total_frames=frames,
        fps=4.0,
        backend="test",
    )


def picture() -> Image.Image:
    return Image.radial_gradient("L").convert("RGB").resize((96, 64))


def media_job(max_new_tokens: int) -> tuple[GenerationJob, list[Media]]:
    """A request with an image and a video (its frames told apart by colour)."""
    request = make_job("Compare them", max_new_tokens=max_new_tokens, temperature=0.0)
    content = request.messages[0].content
    content.append(ImagePart(url="http://media.test/a.png", param="messages[0].content[1]"))
    content.append(VideoPart(url="http://media.test/b.mp4", param="messages[0].content[2]"))
    return request, [picture(), clip()]


def one_pass(loaded: LoadedModel, inputs: Any, positions: torch.Tensor) -> tuple[torch.Tensor, Any]:
    outputs = loaded.model.model(**inputs, position_ids=positions, use_cache=True)
    return outputs.last_hidden_state[:, -1], outputs.past_key_values


def assert_pieces_make_the_one_pass_prefill(
    loaded: LoadedModel, inputs: Any, positions: torch.Tensor, chunk_tokens: int
) -> int:
    """Prefill in pieces and in one pass; the same last hidden state and cache. The pauses taken."""
    with torch.inference_mode():
        expected_hidden, expected_cache = one_pass(loaded, inputs, positions)
        pieces = media_prefill(loaded.model, inputs, positions, chunk_tokens=chunk_tokens)
        count = 0
        try:
            while True:
                next(pieces)
                count += 1
        except StopIteration as finished:
            hidden, cache = finished.value
    assert torch.allclose(hidden, expected_hidden, atol=1e-4)
    for mine, theirs in zip(dynamic_layers(cache), dynamic_layers(expected_cache), strict=True):
        assert mine.keys is not None and theirs.keys is not None
        assert mine.keys.shape == theirs.keys.shape
        assert torch.allclose(mine.keys, theirs.keys, atol=1e-4)
    return count


def test_a_prefill_in_pieces_is_the_one_pass_prefill(loaded: LoadedModel) -> None:
    request, media = media_job(8)
    inputs = prepare(loaded, request, media).inputs
    engine_positions = loaded.model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        video_grid_thw=inputs["video_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )[0]
    count = assert_pieces_make_the_one_pass_prefill(loaded, inputs, engine_positions, chunk_tokens=16)
    length = inputs["input_ids"].shape[1]
    # The image, the video's frame groups one by one, then the prompt 16 tokens at a time.
    video_groups = int(inputs["video_grid_thw"][0, 0])
    assert count + 1 >= 1 + video_groups + length // 16


class CountingEngine(Engine):
    """Records how many rows each decoding step decoded while a prompt was being prefilled."""

    def __init__(self, loaded: LoadedModel, connection: redis.Redis, chunk_tokens: int) -> None:
        super().__init__(loaded, connection, max_batch=8, prefill_chunk_tokens=chunk_tokens)
        self.steps_while_prefilling: list[int] = []

    def _decode_step(self) -> None:
        if self._prefilling is not None:
            self.steps_while_prefilling.append(len(self._active))
        super()._decode_step()


def arrive_while_decoding(engine: Engine, running: Sequence, arriving: Sequence) -> None:
    """Start the engine and ``running``; once it decodes, run ``arriving`` to its end, then
    let ``running`` finish."""
    engine.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(decode, engine, running)
            while not running.generated:
                time.sleep(0.001)
            pool.submit(decode, engine, arriving).result(timeout=60)
            first.result(timeout=60)
    finally:
        engine.stop()


def test_running_streams_keep_decoding_while_a_video_prompt_is_prefilled(
    loaded: LoadedModel, sequence_for: SequenceFactory, connection: redis.Redis
) -> None:
    text_job = job(PROMPTS[0], 60, temperature=0.0, logit_bias=no_eos(loaded))
    request, media = media_job(20)
    engine = CountingEngine(loaded, connection, chunk_tokens=16)
    text, with_media = sequence_for(text_job), sequence_for(request, media)
    arrive_while_decoding(engine, text, with_media)
    # The text row went on between the pieces; then both decoded as generate() does.
    assert len(engine.steps_while_prefilling) >= 4
    assert set(engine.steps_while_prefilling) == {1}
    assert text.generated == reference_tokens(loaded, text_job)
    expected = reference_tokens(loaded, request, media)
    assert with_media.generated and with_media.generated == expected[: len(with_media.generated)]


def long_text_job(words: int, max_new_tokens: int, loaded: LoadedModel) -> GenerationJob:
    text = "Summarise this: " + " ".join(["lighthouse", "keeper", "bottle", "message"] * (words // 4))
    return job(text, max_new_tokens, temperature=0.0, logit_bias=no_eos(loaded))


def test_a_long_text_prompt_in_pieces_is_the_one_pass_prefill(loaded: LoadedModel) -> None:
    inputs = prepare(loaded, long_text_job(200, 8, loaded)).inputs
    length = inputs["input_ids"].shape[1]
    positions = torch.arange(length).view(1, 1, -1).expand(3, 1, -1)
    count = assert_pieces_make_the_one_pass_prefill(loaded, inputs, positions, chunk_tokens=32)
    assert length > 200 and count == -(-length // 32) - 1  # a pause between each two chunks


def test_running_streams_keep_decoding_while_a_long_text_prompt_is_prefilled(
    loaded: LoadedModel, sequence_for: SequenceFactory, connection: redis.Redis
) -> None:
    text_job = job(PROMPTS[0], 60, temperature=0.0, logit_bias=no_eos(loaded))
    long_job = long_text_job(200, 12, loaded)
    engine = CountingEngine(loaded, connection, chunk_tokens=32)
    text, long = sequence_for(text_job), sequence_for(long_job)
    arrive_while_decoding(engine, text, long)
    # A prompt of 200+ tokens in pieces of 32: the running row decoded between them.
    assert len(engine.steps_while_prefilling) >= 5
    assert set(engine.steps_while_prefilling) == {1}
    assert text.generated == reference_tokens(loaded, text_job)
    assert long.generated == reference_tokens(loaded, long_job)
