"""A prompt with images or video, or a long text, prefilled in pieces between decoding steps.

Prefilled in one forward pass, a video prompt stalls every running stream for as long as
the vision encoder takes over all its frames and the language model over its thousands of
tokens. Here the prefill is a generator that the engine advances one piece at a time, a
decoding step of the running batch between pieces:

- the vision encoder, an image at a time, a video a few frames at a time: its attention
  never crosses a frame group (temporal patch), so features encoded frame group by frame
  group are the ones encoded all at once;
- the language model over the prompt in chunks, each attending to the cache the chunks
  before it left, with the deepstack features of the visual tokens it holds.

A piece stays around ``chunk_tokens`` tokens of output (the vision encoder's output after
the 2x2 merge, or the language model's input). The result is the one-pass prefill's, up
to float rounding: the last position's hidden state and the prompt's cache. A text prompt
longer than a piece goes the same way, through the language model's chunks alone.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch
from transformers import DynamicCache

Prefill = Generator[None, None, tuple[torch.Tensor, DynamicCache]]


def _encode(
    inner: Any, pixels: torch.Tensor | None, grids: torch.Tensor | None, chunk_tokens: int
) -> Generator[None, None, tuple[torch.Tensor, list[torch.Tensor]] | None]:
    """Encode the images (or videos) of one kind, a piece at a time: (features, deepstack)."""
    if pixels is None or grids is None:
        return None
    merge = inner.visual.spatial_merge_size**2
    pooled: list[torch.Tensor] = []
    deepstack: list[list[torch.Tensor]] = []
    start = 0
    for frames, height, width in grids.tolist():
        patches_per_frame = height * width
        step = max(1, chunk_tokens // max(1, patches_per_frame // merge))
        for first in range(0, frames, step):
            count = min(step, frames - first)
            if pooled:
                yield
            rows = pixels[start + first * patches_per_frame : start + (first + count) * patches_per_frame]
            grid = torch.tensor([[count, height, width]], dtype=grids.dtype, device=grids.device)
            output = inner.get_image_features(rows, grid, return_dict=True)
            pooled.append(torch.cat(output.pooler_output))
            if not deepstack:
                deepstack = [[] for _ in output.deepstack_features]
            for layer, features in zip(deepstack, output.deepstack_features, strict=True):
                layer.append(torch.cat(features))
        start += frames * patches_per_frame
    return torch.cat(pooled), [torch.cat(layer) for layer in deepstack]


def media_prefill(model: Any, inputs: Any, positions: torch.Tensor, chunk_tokens: int) -> Prefill:
    """Prefill ``inputs`` (one row: text, with or without images and video) a piece per ``next()``."""
    inner = model.model
    config = inner.config
    input_ids = inputs["input_ids"]
    embeds = inner.get_input_embeddings()(input_ids)
    images = yield from _encode(inner, inputs.get("pixel_values"), inputs.get("image_grid_thw"), chunk_tokens)
    if images is not None:
        yield
    videos = yield from _encode(
        inner, inputs.get("pixel_values_videos"), inputs.get("video_grid_thw"), chunk_tokens
    )
    if videos is not None:
        yield
    image_mask = input_ids == config.image_token_id
    video_mask = input_ids == config.video_token_id
    visual = image_mask | video_mask
    deepstack: list[torch.Tensor] = []
    for mask, encoded in ((image_mask, images), (video_mask, videos)):
        if encoded is None:
            continue
        features, layers = encoded
        if int(mask.sum()) != features.shape[0]:
            raise ValueError(f"{int(mask.sum())} placeholder tokens for {features.shape[0]} visual features")
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), features.to(embeds.dtype))
        if not deepstack:
            deepstack = [embeds.new_zeros(int(visual.sum()), embeds.shape[-1]) for _ in layers]
        # The deepstack features of all visual tokens, in prompt order (images and videos mixed).
        for joint, layer in zip(deepstack, layers, strict=True):
            joint[mask[visual]] = layer.to(joint.dtype)
    cache = DynamicCache()
    length = input_ids.shape[1]
    seen_visual = 0
    hidden = embeds[:, -1]
    for start in range(0, length, chunk_tokens):
        if start:
            yield
        end = min(length, start + chunk_tokens)
        chunk_visual = visual[:, start:end]
        count = int(chunk_visual.sum())
        chunk_deepstack = [d[seen_visual : seen_visual + count] for d in deepstack] if count else None
        outputs = inner.language_model(
            inputs_embeds=embeds[:, start:end],
            position_ids=positions[..., start:end],
            past_key_values=cache,
            use_cache=True,
            visual_pos_masks=chunk_visual if count else None,
            deepstack_visual_embeds=chunk_deepstack,
        )
        seen_visual += count
        hidden = outputs.last_hidden_state[:, -1]
    return hidden, cache
