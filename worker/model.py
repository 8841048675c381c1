"""Loads the model and its processor once, when the worker starts."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, GenerationConfig

from shared.settings import Settings
from worker.compiled import OWN_GRAPHS_MODES, compile_language_model
from worker.grammar import Grammars
from worker.kv_budget import KvBudget
from worker.reasoning import THINK_END, THINK_START
from worker.steering import ThinkingEnd
from worker.token_text import TokenTexts

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    tokenizer: Any
    # A second tokenizer for decoding output in the engine thread: a fast tokenizer is not
    # safe to use from two threads while one of them tokenizes a new prompt.
    decoder: Any
    generation_config: GenerationConfig
    eos_token_ids: frozenset[int]
    think_start_id: int
    think_end_id: int
    im_start_id: int  # opens every turn of the chat template
    max_model_len: int  # MAX_MODEL_LEN, or the model's own maximum when lower
    vocab_size: int  # token ids a request may name (logit_bias): those of the tokenizer
    kv: KvBudget
    grammars: Grammars
    token_texts: TokenTexts  # of the decoder: used in the engine thread
    thinking_end: ThinkingEnd
    # The language model runs compiled (WORKER_COMPILE): the engine then decodes under
    # no_grad, as torch.compile cannot trace inference-mode tensors it did not create.
    compiled: bool = False
    # ... in a mode that captures CUDA graphs of its own (worker.compiled.OWN_GRAPHS_MODES).
    compiled_graphs: bool = False

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    @property
    def max_context_tokens(self) -> int:
        """The longest prompt + completion served: within the model and within the KV budget."""
        return min(self.max_model_len, self.kv.capacity_tokens)


def _dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def _eos_ids(config: GenerationConfig, tokenizer: Any) -> frozenset[int]:
    eos = config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def thinking_end(tokenizer: Any, closing: str) -> ThinkingEnd:
    separator = tuple(tokenizer.encode("\n\n", add_special_tokens=False))
    return ThinkingEnd(
        closing=tuple(tokenizer.encode(closing, add_special_tokens=False)) if closing else (),
        end=(tokenizer.convert_tokens_to_ids(THINK_END), *separator),
        separator=separator,
    )


def load_model(settings: Settings) -> LoadedModel:
    source = settings.model_repo_id
    token = settings.hf_token or None
    began = time.monotonic()
    log.info("loading %s (device_map=%s, dtype=%s)", source, settings.device_map, settings.torch_dtype)
    log.info("model load 1/3: processor and tokenizer")
    processor = AutoProcessor.from_pretrained(source, token=token)
    log.info("model load 2/3: weights (downloaded first if not cached; a progress bar follows)")
    model = AutoModelForImageTextToText.from_pretrained(
        source,
        token=token,
        dtype=_dtype(settings.torch_dtype),
        device_map=settings.device_map or None,
    )
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    log.info("model load 3/3: KV cache budget (%.2fB parameters on %s)", parameters / 1e9, model.device)
    tokenizer = processor.tokenizer
    generation_config = model.generation_config
    text_config = model.config.get_text_config()
    eos_token_ids = _eos_ids(generation_config, tokenizer)
    grammars = Grammars(tokenizer, int(text_config.vocab_size), eos_token_ids)
    # Wrapped for the grammar engine meanwhile (seconds), before the worker announces itself.
    preparing = threading.Thread(target=grammars.prepare, name="grammar-prepare", daemon=True)
    preparing.start()
    decoder = AutoTokenizer.from_pretrained(source, token=token)
    max_model_len = min(settings.max_model_len, int(text_config.max_position_embeddings))
    # Measured now that the weights are in place: the automatic budget is what is left.
    kv = KvBudget.for_model(settings, text_config, model.dtype, torch.device(model.device))
    if kv.capacity_tokens < max_model_len:
        log.warning(
            "the KV cache budget holds %d tokens, fewer than the %d of MAX_MODEL_LEN: "
            "longer requests will be refused",
            kv.capacity_tokens,
            max_model_len,
        )
    if settings.worker_compile:
        compile_language_model(model, settings.worker_compile)
    preparing.join()
    log.info("model loaded in %.1f s", time.monotonic() - began)
    return LoadedModel(
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        decoder=decoder,
        generation_config=generation_config,
        eos_token_ids=eos_token_ids,
        think_start_id=tokenizer.convert_tokens_to_ids(THINK_START),
        think_end_id=tokenizer.convert_tokens_to_ids(THINK_END),
        im_start_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        max_model_len=max_model_len,
        vocab_size=min(len(tokenizer), int(text_config.vocab_size)),
        kv=kv,
        grammars=grammars,
        token_texts=TokenTexts(decoder),
        thinking_end=thinking_end(tokenizer, settings.thinking_budget_closing),
        compiled=bool(settings.worker_compile),
        compiled_graphs=settings.worker_compile in OWN_GRAPHS_MODES,
    )
