"""The roofline's bytes per decoding step: the language model and the lm_head, once each."""

from __future__ import annotations

import torch
from transformers import AutoModelForImageTextToText

from bench.roofline import Roofline, step_weight_bytes
from worker.tiny_checkpoint import VOCAB_SIZE, build_config


def on_meta(size: str, tied: bool = True) -> torch.nn.Module:
    config = build_config(size)
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = tied
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-any-return,no-untyped-call]


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_a_step_reads_the_language_model_and_a_tied_head_once_and_not_the_vision_tower() -> None:
    model = on_meta("tiny")
    language_model = parameters(model.model.language_model)  # type: ignore[union-attr,arg-type]
    assert step_weight_bytes(model) == 2 * language_model
    assert parameters(model) - language_model == parameters(model.model.visual)  # type: ignore[union-attr,arg-type]


def test_an_untied_head_is_read_besides_the_embedding() -> None:
    tied, untied = on_meta("tiny"), on_meta("tiny", tied=False)
    hidden = build_config("tiny").text_config.hidden_size
    assert step_weight_bytes(untied) == step_weight_bytes(tied) + 2 * VOCAB_SIZE * hidden


def test_the_real_size_reads_3_44_gb_per_step_in_bfloat16() -> None:
    weight_bytes = step_weight_bytes(on_meta("real"))
    assert weight_bytes == 3_441_149_952
    roofline = Roofline.of("a GPU", weight_bytes, 4.0e12)
    assert round(roofline.steps_per_s) == 1162
